//go:build !unix

package nfs

import (
	"errors"
	"os"
)

var errUnix = errors.New("nfs-ganesha runs on a unix host")

func alive(int) error  { return errUnix }
func hangUp(int) error { return errUnix }

func lockDir(string) (*os.File, error) { return nil, errUnix }
