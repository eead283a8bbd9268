//go:build !unix

package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
)

// labctl serve and console --direct lock the state directory and run
// console programs in ptys: neither exists here, so they refuse at once.
var (
	errServeUnsupported  = fmt.Errorf("serve: labctl serve is not supported on %s; run it on a Linux host and use labctl here as its client (--server URL)", runtime.GOOS)
	errDirectUnsupported = fmt.Errorf("console --direct: not supported on %s; use labctl console through a daemon", runtime.GOOS)
)

// tryLock is never reached: the commands that lock refuse first.
func tryLock(*os.File, bool) error { return errors.ErrUnsupported }

// notifyResize does nothing: the console keeps the size it started with.
func notifyResize(chan<- os.Signal) {}

// execBinary cannot replace a process here: the caller goes on itself.
func execBinary(string, []string, []string) error { return errors.ErrUnsupported }
