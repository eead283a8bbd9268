// Package api is the lab daemon's HTTP JSON API: the wire types, the
// server (over the Service interface the daemon implements) and the client
// labctl uses.
//
// Every request carries a bearer token from the lab config
// ([[server.tokens]]). Errors come back as {"error": "message"} with a
// status chosen in one place (statusOf): 400 malformed or invalid, 401 no
// valid token, 404 no such job or device, 409 the device is busy or the
// job is in the wrong state, 413 body too large, 502 the node's BMC or
// console failed, 500 anything else (details only in the daemon's log).
//
// Endpoints, all under /api/v1:
//
//	POST /jobs                      submit (SubmitRequest) → Job
//	GET  /jobs?state=S&limit=N&before=ID  list → []Job (before: IDs below, the next page)
//	GET  /jobs/{id}                 → Job (with its results once finished)
//	POST /jobs/{id}/cancel          → Job
//	GET  /jobs/{id}/log             the job log, text
//	GET  /jobs/{id}/junit           JUnit XML, once finished
//	GET  /jobs/{id}/artifacts/NAME  a file the job fetched back (NAME as its results list it)
//	POST /jobs/{id}/resubmit        queue the job's file again → Job
//	GET  /jobs/{id}/events?offset=N&log=false  NDJSON stream of Event until the job ends
//	GET  /devices                   → []Device
//	GET  /devices/{name}            → Device
//	POST /devices/{name}/maintenance  (DeviceRequest) → Device
//	POST /devices/{name}/online     → Device (after a health check)
//	POST /devices/{name}/health     run the health check now → Device
//	POST /devices/{name}/power      (PowerRequest) → PowerResponse
//	POST /devices/{name}/bootdev    (BootdevRequest) → BootdevResponse
//	GET  /consoles                  → []ConsoleInfo
//	GET  /devices/{name}/console    → ConsoleInfo
//	GET  /devices/{name}/console/attach  Upgrade: labctl-console.v1 (console.go)
//	GET  /audit?device=NODE&who=TOKEN&since=RFC3339&limit=N  → []AuditEntry (audit.go)
package api

// errorBody is how errors travel.
type errorBody struct {
	Error string `json:"error"`
}
