package devices

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseDeviceType: no input crashes the device-type parser, and what it
// accepts is complete enough to drive a device.
func FuzzParseDeviceType(f *testing.F) {
	files, _ := filepath.Glob("../device-types/*.toml")
	for _, file := range files {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte(fixture()["types/qemu.toml"]))
	f.Fuzz(func(t *testing.T, data []byte) {
		dt, err := ParseDeviceType("fuzz.toml", data)
		if err != nil {
			return
		}
		s := dt.Settings
		if s.Master.Kernel == "" || s.Master.Disk == "" || s.Login.ShellPrompt == "" || s.Timeouts.Job <= 0 {
			t.Errorf("ParseDeviceType accepted incomplete settings: %+v", s)
		}
		if s.Console.Driver == ConsoleCmd && s.Console.ConnectionCommand.IsZero() {
			t.Error("ParseDeviceType accepted the command console driver without a connection command")
		}
	})
}
