package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/internal/tomlfile"
	"github.com/labctl/labctl/jobs"
)

// fileKind is a kind of configuration file.
type fileKind string

const (
	kindLab        fileKind = "lab"
	kindDeviceType fileKind = "device-type"
	kindDevice     fileKind = "device"
	kindJob        fileKind = "job"
)

var fileKinds = []fileKind{kindLab, kindDeviceType, kindDevice, kindJob}

type validateOptions struct {
	files []string
	lab   string   // lab file that devices and jobs are checked against
	kind  fileKind // every file is of this kind; "" to tell from each file
}

func newValidateCommand(env *appEnv) *cli.Command {
	return &cli.Command{
		Name:      "validate",
		Usage:     "check lab, device-type, device and job files",
		ArgsUsage: "FILE...",
		Description: `Checks each FILE strictly: unknown keys, wrong types, missing or bad
values. Every problem is printed as FILE:LINE: key: message; a valid
file gets an "ok" line.

The kind of each file is told from its name and place (lab.toml,
device-types/, devices/, jobs/) or else from its keys; --kind says it.
A device is checked with its lab (--lab, or a lab.toml in the device's
directory or the one above), so that its device type, its overrides and
its uniqueness in the lab are checked too; without a lab, against the
nearest device-types/ directory above it; failing that, alone. A job is
checked against the lab given with --lab (its device, or devices of its
type with its tags, must exist).

EXAMPLES:
   labctl validate examples/jobs/smoke.toml
   labctl validate examples/lab.toml device-types/*.toml
   labctl validate --lab examples/rack/lab.toml examples/jobs/nightly-x86.toml
   labctl validate --kind job ~/jobs/*.toml

EXIT STATUS:
   0 every file is valid (warnings allowed), 1 a file has problems,
   64 the command line is wrong.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "lab", Usage: "check devices and jobs against the lab `FILE`", EnvVars: []string{"LABCTL_LAB"}, TakesFile: true},
			&cli.StringFlag{Name: "kind", Usage: "every FILE is a `KIND`: lab, device-type, device or job (default: tell from each file)"},
		},
		Action: func(c *cli.Context) error {
			kind := fileKind(c.String("kind"))
			if kind != "" && !slices.Contains(fileKinds, kind) {
				return usageErrorf("validate: --kind %q: use lab, device-type, device or job", kind)
			}
			if !c.Args().Present() {
				return usageErrorf("validate: no FILE given (see labctl validate --help)")
			}
			return runValidate(c.Context, validateOptions{files: c.Args().Slice(), lab: c.String("lab"), kind: kind}, env)
		},
	}
}

// validation is what checking one file found.
type validation struct {
	summary  string // what the file is, for the "ok" line
	problems []tomlfile.Problem
	notes    []string // how it was checked, where that is not obvious
}

func runValidate(ctx context.Context, opts validateOptions, env *appEnv) error {
	invalid := 0
	for _, file := range opts.files {
		if err := ctx.Err(); err != nil {
			return err
		}
		v := validateFile(file, opts)
		for _, p := range v.problems {
			fmt.Fprintln(env.stdout, p)
		}
		for _, note := range v.notes {
			fmt.Fprintf(env.stdout, "%s: note: %s\n", file, note)
		}
		if tomlfile.Check(v.problems) != nil {
			invalid++
			continue
		}
		fmt.Fprintf(env.stdout, "%s: ok (%s)\n", file, v.summary)
	}
	if invalid > 0 {
		return fmt.Errorf("validate: %d of %d files have problems", invalid, len(opts.files))
	}
	return nil
}

func validateFile(file string, opts validateOptions) validation {
	kind := opts.kind
	if kind == "" {
		var err error
		if kind, err = detectKind(file); err != nil {
			return validation{problems: tomlfile.Problems(file, err)}
		}
	}
	switch kind {
	case kindLab:
		return validateLab(file)
	case kindDeviceType:
		dt, err := devices.LoadDeviceType(file)
		if err != nil {
			return validation{problems: tomlfile.Problems(file, err)}
		}
		return validation{summary: fmt.Sprintf("device type %q", dt.Name)}
	case kindDevice:
		return validateDevice(file, opts.lab)
	default:
		return validateJob(file, opts.lab)
	}
}

// detectKind tells the kind of a file from its name and directory, or else
// from its top-level keys.
func detectKind(file string) (fileKind, error) {
	if filepath.Base(file) == "lab.toml" {
		return kindLab, nil
	}
	if abs, err := filepath.Abs(file); err == nil {
		switch filepath.Base(filepath.Dir(abs)) {
		case "device-types":
			return kindDeviceType, nil
		case "devices":
			return kindDevice, nil
		case "jobs":
			return kindJob, nil
		}
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	keys, err := tomlfile.TopLevelKeys(data)
	if err != nil {
		_, err = tomlfile.Decode(file, data, &struct{}{}) // the syntax error, with its line
		return "", err
	}
	// Keys that only one kind of file has.
	hints := map[fileKind][]string{
		kindLab:        {"device_types", "devices", "state_dir", "boot_server", "server"},
		kindDeviceType: {"description", "power", "bootdev", "console", "master", "local_boot", "login", "timeouts", "health"},
		kindDevice:     {"mac", "ip", "bmc", "override"},
		kindJob:        {"device", "priority", "timeout", "keep_powered_on", "artifacts", "deploy", "boot", "test", "save"},
	}
	var found []fileKind
	for _, kind := range fileKinds {
		if slices.ContainsFunc(keys, func(k string) bool { return slices.Contains(hints[kind], k) }) {
			found = append(found, kind)
		}
	}
	if len(found) != 1 {
		return "", fmt.Errorf("cannot tell whether this is a lab, device-type, device or job file (top-level keys: %s): use --kind",
			strings.Join(keys, ", "))
	}
	return found[0], nil
}

func validateLab(file string) validation {
	lab, err := devices.Load(file)
	if err != nil {
		return validation{problems: tomlfile.Problems(file, err)}
	}
	return validation{
		summary:  fmt.Sprintf("lab %q: %d device types, %d devices", lab.Name, len(lab.DeviceTypes), len(lab.Devices)),
		problems: lab.Warnings,
	}
}

// validateDevice checks a device with its lab if it has one, else against
// the nearest device-types directory, else alone.
func validateDevice(file, labFile string) validation {
	if labFile == "" {
		labFile = nearbyLab(file)
	}
	if labFile != "" {
		lab, err := devices.Load(labFile)
		if err != nil {
			mine, others := splitProblems(tomlfile.Problems(labFile, err), file)
			v := validation{summary: fmt.Sprintf("device, checked with lab %s", labFile), problems: mine}
			if others > 0 {
				v.notes = append(v.notes, fmt.Sprintf("lab %s has %d problems in other files (labctl validate %s)", labFile, others, labFile))
			}
			return v
		}
		for _, d := range lab.Devices {
			if sameFile(d.File, file) {
				mine, _ := splitProblems(lab.Warnings, file)
				return validation{summary: fmt.Sprintf("device %q of lab %s", d.Name, labFile), problems: mine}
			}
		}
		return checkDevice(file, lab.DeviceTypes, fmt.Sprintf("against the device types of lab %s", labFile))
	}
	if dir := findUp(file, "device-types"); dir != "" {
		types, err := devices.LoadDeviceTypes(dir)
		v := checkDevice(file, types, fmt.Sprintf("against %s", dir))
		if err != nil {
			v.notes = append(v.notes, fmt.Sprintf("some device types in %s have problems (labctl validate %s/*.toml)", dir, dir))
		}
		return v
	}
	v := checkDevice(file, nil, "alone")
	v.notes = append(v.notes, "checked without its device type: no lab.toml or device-types directory found (use --lab)")
	return v
}

func checkDevice(file string, types map[string]*devices.DeviceType, how string) validation {
	d, warnings, err := devices.LoadDevice(file, types)
	if err != nil {
		return validation{problems: tomlfile.Problems(file, err)}
	}
	return validation{summary: fmt.Sprintf("device %q, checked %s", d.Name, how), problems: warnings}
}

// validateJob checks a job file, and with a lab, that the lab can run it.
func validateJob(file, labFile string) validation {
	job, err := jobs.Load(file)
	if err != nil {
		return validation{problems: tomlfile.Problems(file, err)}
	}
	v := validation{summary: fmt.Sprintf("job %q, %d test steps", job.Name, len(job.Tests))}
	if labFile == "" {
		return v
	}
	lab, err := devices.Load(labFile)
	if err != nil {
		v.notes = append(v.notes, fmt.Sprintf("not checked against lab %s: it has problems (labctl validate %s)", labFile, labFile))
		return v
	}
	problem := func(key, format string, args ...any) {
		v.problems = append(v.problems, tomlfile.Problem{File: file, Line: job.Line(key), Key: key, Message: fmt.Sprintf(format, args...)})
	}
	switch {
	case job.Device != "":
		if _, ok := lab.Device(job.Device); !ok {
			problem("device", "lab %s has no device %q", labFile, job.Device)
		}
	case lab.DeviceTypes[job.DeviceType] == nil:
		problem("device_type", "lab %s has no device type %q", labFile, job.DeviceType)
	default:
		matches := lab.Match(job.DeviceType, job.Tags)
		switch {
		case len(matches) > 0:
		case len(job.Tags) == 0:
			problem("device_type", "lab %s has no %s device", labFile, job.DeviceType)
		default:
			problem("tags", "no %s device of lab %s has all of the tags %s", job.DeviceType, labFile, strings.Join(job.Tags, ", "))
		}
		v.summary += fmt.Sprintf(", %d matching devices in lab %s", len(matches), labFile)
	}
	return v
}

// splitProblems returns the problems of file, and how many others there are.
func splitProblems(problems []tomlfile.Problem, file string) (mine []tomlfile.Problem, others int) {
	for _, p := range problems {
		if sameFile(p.File, file) {
			mine = append(mine, p)
		} else if !p.Warning {
			others++
		}
	}
	return mine, others
}

func sameFile(a, b string) bool {
	absA, errA := filepath.Abs(a)
	absB, errB := filepath.Abs(b)
	return errA == nil && errB == nil && absA == absB
}

// nearbyLab returns the lab.toml in a device file's directory or the one
// above it (the layout of docs/architecture.md: lab.toml beside devices/).
func nearbyLab(deviceFile string) string {
	dir := filepath.Dir(deviceFile)
	for _, candidate := range []string{filepath.Join(dir, "lab.toml"), filepath.Join(dir, "..", "lab.toml")} {
		if info, err := os.Stat(candidate); err == nil && info.Mode().IsRegular() {
			return filepath.Clean(candidate)
		}
	}
	return ""
}

// findUp returns the directory called name in the directory of file or
// the nearest one above it, or "".
func findUp(file, name string) string {
	dir, err := filepath.Abs(filepath.Dir(file))
	if err != nil {
		return ""
	}
	for {
		candidate := filepath.Join(dir, name)
		if info, err := os.Stat(candidate); err == nil && info.IsDir() {
			return relative(candidate)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// relative returns path relative to the working directory when that is
// shorter to read, for messages.
func relative(path string) string {
	wd, err := os.Getwd()
	if err != nil {
		return path
	}
	if rel, err := filepath.Rel(wd, path); err == nil && len(rel) < len(path) {
		return rel
	}
	return path
}
