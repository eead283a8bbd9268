package bmc

import "syscall"

func errConnRefused() error { return syscall.ECONNREFUSED }
