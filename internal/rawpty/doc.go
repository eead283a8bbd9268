// Package rawpty starts a program on a pseudo-terminal that is in raw mode
// before the program runs: the way labctl's command console driver (sol)
// runs a console client, and the way the simulated lab's tests run
// ipmitool as a person would.
package rawpty
