package devices

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"text/template"
)

// Command is a command line from a device type (connection_command,
// on_command, ...) whose words are Go text/template templates filled from
// the device: {{.Name}} {{.Host}} {{.Port}} {{.User}} {{.PasswordFile}}
// {{.MAC}} {{.IP}}.
//
// A command is run without a shell. Its text is split into words the way a
// shell splits simple command lines: spaces separate words, 'single' and
// "double" quotes group them, a backslash escapes the next character. Pipes,
// redirections, variables and the like are refused; a command that needs
// them says so: sh -c '...'. Each word is filled in on its own, so a value
// with spaces in it stays one argument.
//
// There is no password field. The password reaches ipmitool through the
// environment (IPMI_PASSWORD, with -E) or a file (-f {{.PasswordFile}}),
// never through the command line, where every user of the machine can read
// it; a command that mentions .Password or gives ipmitool -P is refused.
type Command struct {
	text  string
	words []*template.Template
}

// commandData is what command templates are filled from.
type commandData struct {
	Name         string
	Host         string
	Port         int
	User         string
	PasswordFile string
	MAC          string
	IP           string
}

// sampleData fills templates when a command is checked at load time.
func sampleData() commandData {
	return commandData{Name: "node", Host: "bmc.example", Port: 623, User: "admin",
		PasswordFile: "/path/to/password", MAC: "52:54:00:00:00:01", IP: "192.0.2.1"}
}

var (
	passwordField = regexp.MustCompile(`\.Password\b`)
	unknownField  = regexp.MustCompile(`can't evaluate field (\w+)`)
)

// UnmarshalText parses and checks a command; the empty string is no command.
func (c *Command) UnmarshalText(text []byte) error {
	s := string(text)
	if strings.TrimSpace(s) == "" {
		*c = Command{}
		return nil
	}
	if passwordField.MatchString(s) {
		return errors.New("commands never get the password: ipmitool reads it from IPMI_PASSWORD with -E, or from a file with -f {{.PasswordFile}}")
	}
	words, err := splitWords(s)
	if err != nil {
		return err
	}
	cmd := Command{text: s}
	for _, w := range words {
		t, err := template.New("command").Option("missingkey=error").Parse(w)
		if err != nil {
			return fmt.Errorf("bad template in %q: %v", w, strings.TrimPrefix(err.Error(), "template: command:1: "))
		}
		cmd.words = append(cmd.words, t)
	}
	argv, err := cmd.argv(sampleData())
	if err != nil {
		return err
	}
	if filepath.Base(argv[0]) == "ipmitool" {
		for _, arg := range argv[1:] {
			if strings.HasPrefix(arg, "-P") {
				return errors.New("ipmitool -P puts the password on the command line, where every user can read it: use -E (labctl sets IPMI_PASSWORD) or -f {{.PasswordFile}}")
			}
		}
	}
	*c = cmd
	return nil
}

// MarshalText returns the command's text.
func (c Command) MarshalText() ([]byte, error) { return []byte(c.text), nil }

// String returns the command's text, with its templates unfilled.
func (c Command) String() string { return c.text }

// IsZero reports whether there is no command.
func (c Command) IsZero() bool { return len(c.words) == 0 }

// usesPasswordFile reports whether the command reads {{.PasswordFile}}.
func (c Command) usesPasswordFile() bool { return strings.Contains(c.text, ".PasswordFile") }

func (c Command) argv(data commandData) ([]string, error) {
	if c.IsZero() {
		return nil, errors.New("no command")
	}
	argv := make([]string, len(c.words))
	for i, t := range c.words {
		var b strings.Builder
		if err := t.Execute(&b, data); err != nil {
			if m := unknownField.FindStringSubmatch(err.Error()); m != nil {
				return nil, fmt.Errorf("unknown field {{.%s}}: use {{.Name}} {{.Host}} {{.Port}} {{.User}} {{.PasswordFile}} {{.MAC}} {{.IP}}", m[1])
			}
			return nil, fmt.Errorf("fill in %q: %v", c.text, err)
		}
		argv[i] = b.String()
	}
	if argv[0] == "" {
		return nil, fmt.Errorf("%q: the program name is empty", c.text)
	}
	return argv, nil
}

// splitWords splits a command line into words like a shell does for simple
// commands. Template actions ({{ ... }}) are copied as they are, quotes and
// spaces inside them included.
func splitWords(s string) ([]string, error) {
	var (
		words []string
		word  strings.Builder
		inArg bool // a word has started (possibly empty: '')
		quote byte // the open quote, or 0
	)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if strings.HasPrefix(s[i:], "{{") {
			end := strings.Index(s[i:], "}}")
			if end < 0 {
				return nil, fmt.Errorf("unclosed {{ in %q", s)
			}
			word.WriteString(s[i : i+end+2])
			inArg = true
			i += end + 1
			continue
		}
		switch {
		case quote == '\'':
			if c == '\'' {
				quote = 0
			} else {
				word.WriteByte(c)
			}
		case quote == '"':
			switch {
			case c == '"':
				quote = 0
			case c == '\\' && i+1 < len(s) && strings.IndexByte(`"\$`+"`", s[i+1]) >= 0:
				i++
				word.WriteByte(s[i])
			default:
				word.WriteByte(c)
			}
		case c == '\'' || c == '"':
			quote = c
			inArg = true
		case c == '\\':
			if i+1 == len(s) {
				return nil, fmt.Errorf("%q ends with a backslash", s)
			}
			i++
			word.WriteByte(s[i])
			inArg = true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if inArg {
				words = append(words, word.String())
				word.Reset()
				inArg = false
			}
		case strings.IndexByte("|&;<>()$`*?~#", c) >= 0:
			return nil, fmt.Errorf("%q: shell syntax (%c) is not supported: commands run without a shell; quote it, or use sh -c '...'", s, c)
		default:
			word.WriteByte(c)
			inArg = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("%q: unclosed %c quote", s, quote)
	}
	if inArg {
		words = append(words, word.String())
	}
	return words, nil
}

// Pattern is a regular expression from a configuration file.
type Pattern struct {
	re *regexp.Regexp
}

func mustPattern(expr string) Pattern { return Pattern{re: regexp.MustCompile(expr)} }

// UnmarshalText compiles the expression (Go RE2 syntax).
func (p *Pattern) UnmarshalText(text []byte) error {
	re, err := regexp.Compile(string(text))
	if err != nil {
		return fmt.Errorf("invalid regexp: %v", strings.TrimPrefix(err.Error(), "error parsing regexp: "))
	}
	p.re = re
	return nil
}

// MarshalText returns the expression.
func (p Pattern) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// String returns the expression.
func (p Pattern) String() string {
	if p.re == nil {
		return ""
	}
	return p.re.String()
}

// Regexp returns the compiled expression, or nil for an empty pattern.
func (p Pattern) Regexp() *regexp.Regexp { return p.re }

// MatchString reports whether s contains a match; an empty pattern matches
// nothing.
func (p Pattern) MatchString(s string) bool { return p.re != nil && p.re.MatchString(s) }
