package api

// The console endpoints let people watch and type on a node's serial
// console through the daemon, which owns the console session (one per
// node: a BMC allows one SOL session at a time):
//
//	GET /api/v1/consoles                           → []ConsoleInfo
//	GET /api/v1/devices/{name}/console             → ConsoleInfo
//	GET /api/v1/devices/{name}/console/attach?who=alice@laptop&replay=50&force=true&read_only=true&rows=50&cols=200
//	    Connection: Upgrade, Upgrade: labctl-console.v1
//	    → 101 Switching Protocols, then frames both ways (consolewire.go)
//
// The broker behind them (labctl.ConsoleService) knows nothing of HTTP:
// it hands out attachments, which this package carries over an upgraded
// connection.

// ConsoleProtocol is the Upgrade token of a console connection.
const ConsoleProtocol = "labctl-console.v1"
