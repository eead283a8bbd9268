package main

import (
	"reflect"
	"testing"
)

// TestEscapeParser feeds keyboard input in pieces, as reads deliver it,
// and checks the actions: escapes only at the start of a line, ~~ a
// literal ~, a ~ split across reads, and a terminal's cursor report after
// Enter that must not move the start of a line.
func TestEscapeParser(t *testing.T) {
	send := func(s string) escEvent { return escEvent{Action: escSend, Data: []byte(s)} }
	act := func(a escAction) escEvent { return escEvent{Action: a} }
	tests := []struct {
		name  string
		reads []string
		want  []escEvent
	}{
		{"detach at attach", []string{"~."}, []escEvent{act(escDetach)}},
		{"detach after enter", []string{"ls\r~."}, []escEvent{send("ls\r"), act(escDetach)}},
		{"mid-line tilde is typed", []string{"a~.b"}, []escEvent{send("a~.b")}},
		{"literal tilde", []string{"~~x"}, []escEvent{send("~x")}},
		{"unknown escape typed as is", []string{"~x"}, []escEvent{send("~x")}},
		{"tilde split across reads", []string{"\r~", "."}, []escEvent{send("\r"), act(escDetach)}},
		{"help and break", []string{"~?", "~B"}, []escEvent{act(escHelp), act(escBreak)}},
		{"power asked, yes", []string{"~R", "y"}, []escEvent{act(escPowerAsk), act(escPowerYes)}},
		{"power asked, no", []string{"~Rn"}, []escEvent{act(escPowerAsk), act(escPowerNo)}},
		{"cursor report after enter keeps the line start", []string{"echo\r", "\x1b[24;15R", "~."},
			[]escEvent{send("echo\r"), send("\x1b[24;15R"), act(escDetach)}},
		{"arrow key is typing", []string{"\x1b[A~."}, []escEvent{send("\x1b[A~.")}},
		{"report mid-line stays mid-line", []string{"ab\x1b[5;9R~."}, []escEvent{send("ab\x1b[5;9R~.")}},
		{"input after detach ignored", []string{"~.more"}, []escEvent{act(escDetach)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newEscapeParser()
			var got []escEvent
			for _, r := range tt.reads {
				got = append(got, p.feed([]byte(r))...)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("reads %q: got %v, want %v", tt.reads, got, tt.want)
			}
		})
	}
}
