//go:build tools

// Package deps pins the prescribed modules in go.mod until real code imports
// them. Delete it once every module below is imported by a real package.
package deps

import (
	_ "github.com/BurntSushi/toml"
	_ "github.com/bougou/go-ipmi/pkg/client"
	_ "github.com/creack/pty"
	_ "github.com/pin/tftp/v3"
	_ "github.com/urfave/cli/v2"
	_ "golang.org/x/sync/errgroup"
	_ "golang.org/x/term"
	_ "modernc.org/sqlite"
)
