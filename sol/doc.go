// Package sol drives node consoles (IPMI Serial-over-LAN or any serial
// console reachable by a command): it connects, keeps a transcript, waits for
// output and types input at a pace the console can take.
//
// The pieces:
//   - A Dialer opens console streams. CommandDialer runs a connection command
//     such as `ipmitool ... -E sol activate` in a pseudo-terminal, with
//     secrets in its environment; StreamDialer wraps any function that opens
//     a stream, which is how the native IPMI driver (bmc.Client.OpenSOL)
//     plugs in. package sol imports no other project package.
//   - A Session owns one console for as long as it is needed: it reads all
//     the time, writes the transcript, reconnects when the stream drops,
//     matches output (Expect), fans it out to subscribers (Subscribe) and
//     takes input from one Writer at a time (Claim, Type).
//
// A job uses it like this:
//
//	s := sol.NewSession(dialer, sol.Options{Transcript: jobLog})
//	if err := s.Open(ctx); err != nil { ... }
//	defer s.Close()
//	w, _ := s.Claim("job 42", false)
//	m, err := s.Expect(ctx, regexp.MustCompile(`master# $`), regexp.MustCompile(`Kernel panic`))
//	rep, err := w.Type(ctx, "uname -a\r", sol.Pacing{Mode: sol.Echo, Delay: 100 * time.Millisecond})
//	log.Print(rep) // typed 9 chars in 0.05 s (echo), fixed 100 ms would take 0.9 s
//
// A console broker (one session per node, shared by a job and people) keeps
// the Session, gives the job or one person the Writer (forcing a takeover is
// the broker's policy decision), and attaches every viewer through its own
// Subscription, so a stalled viewer never slows the job.
//
// Package soltest has a fake console with lossy input for tests.
package sol
