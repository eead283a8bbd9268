package results

import (
	"encoding/xml"
	"fmt"
	"io"
	"strings"
)

type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Name     string       `xml:"name,attr"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Errors   int          `xml:"errors,attr"`
	Time     string       `xml:"time,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name       string          `xml:"name,attr"`
	Tests      int             `xml:"tests,attr"`
	Failures   int             `xml:"failures,attr"`
	Errors     int             `xml:"errors,attr"`
	Skipped    int             `xml:"skipped,attr"`
	Time       string          `xml:"time,attr"`
	Timestamp  string          `xml:"timestamp,attr"`
	Properties []junitProperty `xml:"properties>property"`
	Cases      []junitCase     `xml:"testcase"`
}

type junitProperty struct {
	Name  string `xml:"name,attr"`
	Value string `xml:"value,attr"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	ClassName string        `xml:"classname,attr"`
	Time      string        `xml:"time,attr"`
	Failure   *junitMessage `xml:"failure,omitempty"`
	Error     *junitMessage `xml:"error,omitempty"`
	Skipped   *junitMessage `xml:"skipped,omitempty"`
	SystemOut string        `xml:"system-out,omitempty"`
}

type junitMessage struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr,omitempty"`
	Text    string `xml:",chardata"`
}

// WriteJUnit writes the record as JUnit XML: one testsuite for the job, one
// testcase per test step. A job that ended incomplete or canceled gets an
// extra testcase carrying the infrastructure error, so CI shows it even when
// no step ran. Console bytes that XML cannot carry become U+FFFD.
func (j *Job) WriteJUnit(w io.Writer) error {
	suite := junitSuite{
		Name:      j.Name,
		Time:      seconds(j.Duration().Seconds()),
		Timestamp: j.Started.UTC().Format("2006-01-02T15:04:05"),
		Properties: []junitProperty{
			{Name: "job_id", Value: j.ID},
			{Name: "device", Value: j.Device},
			{Name: "outcome", Value: j.Outcome},
		},
	}
	class := "labctl." + j.Name
	for _, s := range j.Steps {
		c := junitCase{Name: s.Name, ClassName: class, Time: seconds(s.Duration.Seconds()), SystemOut: xmlSafe(s.Output)}
		switch s.Result {
		case Pass, ExpectedFail:
		case Skipped:
			c.Skipped = &junitMessage{Message: "not run: the job ended before this step"}
			suite.Skipped++
		case Timeout:
			c.Failure = &junitMessage{Message: "timed out", Type: "timeout", Text: xmlSafe(s.FailedCommand)}
			suite.Failures++
		default:
			msg := fmt.Sprintf("exit code %d", s.ExitCode)
			if s.Result == UnexpectedOK {
				msg = "passed but was expected to fail"
			}
			c.Failure = &junitMessage{Message: msg, Type: s.Result, Text: xmlSafe(s.FailedCommand)}
			suite.Failures++
		}
		suite.Cases = append(suite.Cases, c)
	}
	if j.Outcome == "incomplete" || j.Outcome == "canceled" {
		suite.Cases = append(suite.Cases, junitCase{
			Name: "job", ClassName: class, Time: seconds(j.Duration().Seconds()),
			Error: &junitMessage{Message: xmlSafe(j.Outcome + ": " + j.Reason), Type: j.Outcome, Text: xmlSafe(j.Action)},
		})
		suite.Errors++
	}
	suite.Tests = len(suite.Cases)
	doc := junitSuites{
		Name: j.Name, Tests: suite.Tests, Failures: suite.Failures, Errors: suite.Errors,
		Time: suite.Time, Suites: []junitSuite{suite},
	}
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

func seconds(s float64) string { return fmt.Sprintf("%.3f", s) }

// xmlSafe replaces characters that XML 1.0 cannot represent (console output
// carries escape sequences and NULs).
func xmlSafe(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\t' || r == '\n' || r == '\r':
			return r
		case r < 0x20, r == 0xFFFE, r == 0xFFFF, r >= 0xD800 && r <= 0xDFFF:
			return '\uFFFD'
		}
		return r
	}, s)
}
