package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/labctl/labctl/netboot"
)

// runBootServer runs labctl's boot server (package netboot, default
// settings unless flags say otherwise) as a process of its own, so that the
// bench accounts its CPU and memory the way it does a peer server's. It
// prints "ready" and, with -publish, one "image URL" line per published
// file (job image URLs count the bytes they serve: progress accounting is
// on, as in a job), then serves until SIGTERM.
func runBootServer(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("bootserver", flag.ContinueOnError)
	root := fs.String("root", "", "boot root")
	tftpAddr := fs.String("tftp", "", "TFTP listen address (empty: off)")
	httpAddr := fs.String("http", "", "HTTP listen address (empty: off)")
	var publish multiFlag
	fs.Var(&publish, "publish", "publish this file as a job image (repeatable)")
	maxWindow := fs.Int("max-window", 0, "TFTP window size cap (0: default)")
	maxTransfers := fs.Int("max-transfers", 0, "TFTP transfer limit (0: default)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile here (for finding where the server spends its time)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	s, err := netboot.New(netboot.Config{
		Root: *root, TFTPAddr: *tftpAddr, HTTPAddr: *httpAddr,
		TFTP: netboot.TFTPSettings{MaxWindowSize: *maxWindow, MaxTransfers: *maxTransfers},
	}, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))) // failures only: the bench keeps stderr as the server's log
	if err != nil {
		return err
	}
	for _, p := range publish {
		f, err := os.Open(p)
		if err != nil {
			s.Close()
			return err
		}
		defer f.Close()
		im, err := s.PublishImage(f)
		if err != nil {
			s.Close()
			return err
		}
		fmt.Fprintln(stdout, "image", im.URL())
	}
	fmt.Fprintln(stdout, "ready")
	return s.Serve(ctx)
}

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return fmt.Sprint(*m) }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
