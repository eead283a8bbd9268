package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// FuzzClientConfig: no client config file crashes labctl, and the files a
// config it accepts names are absolute ("~/" is the home directory, other
// relative names are next to the config).
func FuzzClientConfig(f *testing.F) {
	for _, s := range []string{
		"server = \"https://lab1.example.com:8470\"\ntoken_file = \"ci.token\"\nca_file = \"~/lab-ca.pem\"\n",
		"server = \"http://127.0.0.1:8470\"\npin = \"sha256:00\"\ntoken_file = \"/etc/labctl/token\"\n",
		"token_file = \"~\"\nca_file = \"~/../x\"\nserver = 1\n",
		"[server]\nx = 1\n", "bogus = true\n",
	} {
		f.Add([]byte(s))
	}
	path := filepath.Join(f.TempDir(), "config.toml")
	env := &appEnv{getenv: func(k string) string {
		switch k {
		case "LABCTL_CONFIG":
			return path
		case "HOME":
			return "/home/u"
		}
		return ""
	}}
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := loadClientConfig(env)
		if err != nil {
			return
		}
		for _, p := range []string{cfg.TokenFile, cfg.CAFile} {
			if p != "" && !filepath.IsAbs(p) {
				t.Errorf("file %q is not absolute", p)
			}
		}
	})
}

// FuzzEscapeParser checks the keyboard side of labctl console: no input
// crashes the escape parser; input without a ~ is sent as it is, whatever
// the reads; and, terminal reports aside (they count only when one read
// holds them whole), where the reads split the input does not change what
// it does.
func FuzzEscapeParser(f *testing.F) {
	for _, s := range []string{"ls\r~.", "a~.b", "~~x", "\r~", "~?~B", "~Ry", "~Rn\r~x", "echo\r\x1b[24;15R~.", "\x1b[A~.", "~.more"} {
		f.Add([]byte(s), uint(2))
	}
	f.Fuzz(func(t *testing.T, in []byte, cut uint) {
		whole := coalesce(newEscapeParser().feed(in))
		k := int(cut % uint(len(in)+1))
		p := newEscapeParser()
		split := p.feed(in[:k])
		if len(split) == 0 || split[len(split)-1].Action != escDetach {
			split = append(split, p.feed(in[k:])...)
		}
		split = coalesce(split)
		var sent []byte
		for _, e := range whole {
			sent = append(sent, e.Data...)
			if e.Action != escSend && len(e.Data) > 0 {
				t.Fatalf("%q: %v with data %q", in, e.Action, e.Data)
			}
		}
		if len(sent) > len(in) {
			t.Fatalf("%q: sends %q, more than was typed", in, sent)
		}
		if bytes.IndexByte(in, escapeChar) < 0 && !bytes.Equal(sent, in) {
			t.Fatalf("%q without escapes: sends %q", in, sent)
		}
		if bytes.IndexByte(in, 0x1b) < 0 && !slices.EqualFunc(whole, split, sameEvent) {
			t.Fatalf("%q: in one read %v, split at %d %v", in, whole, k, split)
		}
	})
}

// coalesce merges consecutive sends, as one read would have given them.
func coalesce(events []escEvent) []escEvent {
	var out []escEvent
	for _, e := range events {
		if n := len(out); n > 0 && e.Action == escSend && out[n-1].Action == escSend {
			out[n-1].Data = append(out[n-1].Data, e.Data...)
			continue
		}
		out = append(out, escEvent{Action: e.Action, Data: append([]byte(nil), e.Data...)})
	}
	return out
}

func sameEvent(a, b escEvent) bool {
	return a.Action == b.Action && bytes.Equal(a.Data, b.Data)
}
