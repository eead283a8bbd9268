package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labctl/labctl/bench"
	"github.com/labctl/labctl/simlab/farm"
)

// runFarm plays every fake node of the scale case (case 4) in one
// process (package simlab/farm), so that the fake nodes cost the daemon
// no CPU of its own:
//
//	labctl-bench farm DIR NODES BASE_PORT BOOT_URL[,BOOT_URL...]
//
// Node i (1-based, named node%03d, MAC 52:54:01:00:hi:lo of i) has its
// BMC on UDP 127.0.0.1:BASE_PORT+i-1 (user farm.User, the password from
// $LABCTL_BENCH_BMC_PASSWORD) and its directory in DIR; its shells take
// their commands from DIR/bin (farm.WriteBin). With several BOOT_URLs,
// one per host of the lab, the nodes are split over them as
// bench.NodeHost splits them over the hosts' lab files. The farm prints
// "ready" once every BMC listens and runs until its stdin closes.
func runFarm(args []string) error {
	const usage = "usage: farm DIR NODES BASE_PORT BOOT_URL[,BOOT_URL...]"
	if len(args) != 4 {
		return errors.New(usage)
	}
	dir, bootURLs := args[0], strings.Split(args[3], ",")
	nodes, err1 := strconv.Atoi(args[1])
	base, err2 := strconv.Atoi(args[2])
	if err1 != nil || err2 != nil || nodes < 1 || nodes > 60000 || base < 1024 || base+nodes > 65536 {
		return fmt.Errorf("farm: NODES %q must be 1 to 60000 and BASE_PORT %q a port from 1024 leaving room for every node; %s", args[1], args[2], usage)
	}
	password := os.Getenv("LABCTL_BENCH_BMC_PASSWORD")
	if password == "" {
		return errors.New("farm: LABCTL_BENCH_BMC_PASSWORD is empty: the BMCs need a password")
	}
	if err := bench.PinToCPUs(os.Getpid(), os.Getenv(bench.FarmCPUsEnv)); err != nil {
		return fmt.Errorf("farm: %w", err)
	}
	// The farm stands in for thousands of BMCs, each with a CPU of its
	// own, on one CPU: a collection every 4x its live heap (some tens of
	// MB) rather than every 2x leaves more of that CPU to their answers.
	debug.SetGCPercent(400)
	if addr := os.Getenv(bench.FarmPprofEnv); addr != "" {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("farm: profiling endpoints: %w", err)
		}
		defer l.Close()
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		go http.Serve(l, mux)
	}
	group, dropGroup := shellGroup()
	defer dropGroup() // after f.Close: the shells are gone
	var configs []farm.NodeConfig
	for i := 1; i <= nodes; i++ {
		configs = append(configs, farm.NodeConfig{Name: fmt.Sprintf("node%03d", i),
			MAC:  net.HardwareAddr{0x52, 0x54, 0x01, 0x00, byte(i >> 8), byte(i)},
			Port: base + i - 1, BootURL: bootURLs[bench.NodeHost(i-1, nodes, len(bootURLs))],
			ShellGroup: group})
	}
	f, err := farm.Start(dir, password, configs)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	return nil
}

// shellGroup makes a control group with the smallest CPU share (cgroup
// v1's cpu hierarchy, cpu.shares 2) for the nodes' shells, under the
// farm's own (farm.NodeConfig.ShellGroup), and returns it and its
// removal. The farm's BMCs then run first and the shells on what is left,
// as a BMC has a CPU of its own: with 2,000 shells busy at once (every
// node reading its disk back), an even share left the BMCs' session opens
// unanswered for seconds. The farm's CPU count (the bench's cpuacct
// group) must be a hierarchy apart, so that it still holds the shells.
// Without such a hierarchy it returns "" and the shells share the CPU
// evenly.
func shellGroup() (string, func()) {
	const base = "/sys/fs/cgroup/cpu"
	dir, err := ownCPUGroup(base)
	if err == nil {
		dir = filepath.Join(dir, fmt.Sprintf("labctl-bench-farm-shells.%d", os.Getpid()))
		err = os.Mkdir(dir, 0o755)
	}
	if err == nil {
		if err = os.WriteFile(filepath.Join(dir, "cpu.shares"), []byte("2"), 0o644); err != nil {
			os.Remove(dir)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "farm: no CPU group for the nodes' shells (%v): they share the farm's CPU evenly with its BMCs\n", err)
		return "", func() {}
	}
	return dir, func() {
		// A killed shell leaves the group when the kernel has reaped it.
		for range 50 {
			if err := os.Remove(dir); err == nil || errors.Is(err, fs.ErrNotExist) {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// ownCPUGroup is the directory of this process's group in the cgroup v1
// cpu hierarchy mounted at base. It fails where that hierarchy also
// counts CPU (cpu and cpuacct mounted together): a group of it would take
// the shells out of the bench's count of the farm's CPU.
func ownCPUGroup(base string) (string, error) {
	if _, err := os.Stat(filepath.Join(base, "cpu.shares")); err != nil {
		return "", fmt.Errorf("no cgroup v1 cpu hierarchy at %s", base)
	}
	if _, err := os.Stat(filepath.Join(base, "cpuacct.usage")); err == nil {
		return "", fmt.Errorf("%s counts CPU too (cpu,cpuacct mounted together)", base)
	}
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		// hierarchy-ID:controller-list:path
		f := strings.SplitN(line, ":", 3)
		if len(f) == 3 && slices.Contains(strings.Split(f[1], ","), "cpu") {
			return filepath.Join(base, f[2]), nil
		}
	}
	return "", errors.New("this process is in no cgroup v1 cpu group")
}
