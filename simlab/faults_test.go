package simlab

import (
	"encoding/binary"
	"encoding/json"
	"testing"
	"time"
)

func TestLossyFilter(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	// Each step: bytes arriving at an offset, or output echoed.
	type step struct {
		at   time.Duration
		echo int // output bytes before this input byte
		want inputVerdict
	}
	tests := []struct {
		name  string
		cfg   LossyConsole
		steps []step
	}{
		{"off: nothing dropped", LossyConsole{}, []step{{0, 0, acceptByte}, {0, 0, acceptByte}, {0, 0, acceptByte}}},
		{"min gap: same instant dropped, later accepted", LossyConsole{MinGap: Duration(ms(10))}, []step{
			{0, 0, acceptByte}, {0, 0, dropGap}, {ms(9), 0, dropGap}, {ms(10), 0, acceptByte}, {ms(15), 0, dropGap}, {ms(25), 0, acceptByte},
		}},
		{"max unechoed 2", LossyConsole{MaxUnechoed: 2}, []step{
			{0, 0, acceptByte}, {0, 0, acceptByte}, {0, 0, acceptByte}, {0, 0, dropUnechoed},
			// One byte echoed: 2 outstanding is not more than 2, so the next
			// byte is accepted (3 outstanding) and the one after dropped.
			{0, 1, acceptByte}, {0, 0, dropUnechoed},
		}},
		{"echo pacing never drops", LossyConsole{MaxUnechoed: 1}, []step{
			{0, 0, acceptByte}, {0, 1, acceptByte}, {0, 1, acceptByte}, {0, 3, acceptByte},
		}},
		{"burst closes once over the limit", LossyConsole{BurstBytes: 3, BurstWindow: Duration(ms(50))}, []step{
			{0, 0, acceptByte}, {ms(1), 0, acceptByte}, {ms(2), 0, acceptByte}, {ms(3), 0, closeSession},
			{ms(100), 0, acceptByte},
		}},
		{"slow typing is no burst", LossyConsole{BurstBytes: 2, BurstWindow: Duration(ms(50))}, []step{
			{0, 0, acceptByte}, {ms(30), 0, acceptByte}, {ms(60), 0, acceptByte}, {ms(90), 0, acceptByte},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := lossyFilter{cfg: tc.cfg}
			t0 := time.Unix(1000, 0)
			for i, s := range tc.steps {
				f.echoed(s.echo)
				if got := f.input(t0.Add(s.at)); got != s.want {
					t.Errorf("step %d (at %s, echo %d): verdict %d, want %d", i, s.at, s.echo, got, s.want)
				}
			}
		})
	}
}

func TestLossyConsoleValidateAndString(t *testing.T) {
	if err := (LossyConsole{MaxUnechoed: -1}).Validate(); err == nil {
		t.Error("negative max_unechoed accepted")
	}
	if err := (LossyConsole{MinGap: Duration(-time.Millisecond)}).Validate(); err == nil {
		t.Error("negative min_gap accepted")
	}
	if s := (LossyConsole{}).String(); s != "off" {
		t.Errorf("String() = %q", s)
	}
	l := LossyConsole{MaxUnechoed: 4, MinGap: Duration(5 * time.Millisecond), BurstBytes: 32}
	if got, want := l.String(), "max_unechoed=4 min_gap=5ms burst_bytes=32 burst_window=100ms"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	b, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	var back LossyConsole
	if err := json.Unmarshal(b, &back); err != nil || back != l {
		t.Errorf("JSON round trip: %s -> %+v, %v", b, back, err)
	}
}

func TestDurationJSON(t *testing.T) {
	for in, want := range map[string]time.Duration{`"10ms"`: 10 * time.Millisecond, `"1m30s"`: 90 * time.Second, `5000`: 5000} {
		var d Duration
		if err := json.Unmarshal([]byte(in), &d); err != nil || time.Duration(d) != want {
			t.Errorf("%s -> %s, %v; want %s", in, d, err, want)
		}
	}
	for _, bad := range []string{`"ten"`, `true`, `{}`} {
		var d Duration
		if err := json.Unmarshal([]byte(bad), &d); err == nil {
			t.Errorf("%s accepted as %s", bad, d)
		}
	}
}

// FuzzLossyFilter feeds arbitrary console input schedules (the bytes a SOL
// client may send) through the filter and checks its invariants.
func FuzzLossyFilter(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 2, 3}, uint8(2), uint16(10), uint8(4))
	f.Add([]byte("echo hello\r"), uint8(0), uint16(0), uint8(0))
	f.Fuzz(func(t *testing.T, schedule []byte, maxUnechoed uint8, gapMS uint16, burst uint8) {
		f := lossyFilter{cfg: LossyConsole{MaxUnechoed: int(maxUnechoed), MinGap: Duration(time.Duration(gapMS) * time.Millisecond), BurstBytes: int(burst)}}
		now := time.Unix(0, 0)
		accepted := 0
		for i := 0; i+1 < len(schedule); i += 2 {
			now = now.Add(time.Duration(schedule[i]) * time.Millisecond)
			if schedule[i+1]&1 == 1 {
				f.echoed(int(binary.BigEndian.Uint16([]byte{0, schedule[i+1] >> 1})))
			}
			v := f.input(now)
			if v == acceptByte {
				accepted++
			}
			if f.unechoed < 0 || f.unechoed > accepted {
				t.Fatalf("unechoed %d out of range (accepted %d)", f.unechoed, accepted)
			}
			if !f.cfg.Enabled() && v != acceptByte {
				t.Fatalf("filter off but verdict %d", v)
			}
			if burst > 0 && len(f.burst) > int(burst) {
				t.Fatalf("burst window holds %d > %d arrivals", len(f.burst), burst)
			}
		}
	})
}
