package jobs

import (
	"os"
	"testing"
)

// FuzzParse: a job file from anyone (submitted to the daemon) must never
// crash the parser, and a job it accepts must be one the dispatcher can use.
func FuzzParse(f *testing.F) {
	if data, err := os.ReadFile("testdata/valid.toml"); err == nil {
		f.Add(data)
	}
	f.Add([]byte(minimal))
	f.Add([]byte(minimal + "[[test]]\nname = \"a\"\ncommands = [\"x\"]\n[[test]]\nname = \"a\"\n"))
	f.Add([]byte("device = 1\n[deploy]\nimage = [\"x\"]\n[[test]]\ntimeout = 5\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		job, err := Parse("fuzz.toml", data, "/jobs")
		if err != nil {
			return
		}
		if job.Deploy.Image == "" || (job.Device == "") == (job.DeviceType == "") {
			t.Errorf("Parse accepted a job without an image or a device: %+v", job)
		}
		for _, test := range job.Tests {
			if test.Name == "" || len(test.Commands) == 0 {
				t.Errorf("Parse accepted a test without a name or commands: %+v", test)
			}
		}
		if _, err := job.Deploy.Digest(); job.Deploy.SHA256File == "" && err != nil {
			t.Errorf("Digest() = %v for an inline sha256", err)
		}
	})
}
