package bench

import "testing"

// The save case reads its figures from the job log's lines as the
// dispatcher writes them.
func TestSaveLogLines(t *testing.T) {
	log := "2026-12-06T07:43:23.709239Z # save: /dev/vda holds 1073741824 bytes, sha256 9e30 on the node (read in 1m3.68s)\n" +
		"2026-12-06T07:45:23.709239Z # save: sha256 9e30 matches on the node and the boot server; 1073741824 bytes of disk in 1m47.5s (9.5 MiB/s), 270000000 bytes stored\n" +
		"2026-12-06T07:47:23.709239Z # deploy: wrote the image in 52.31s\n"
	h, s, d := saveHashLine.FindStringSubmatch(log), saveSendLine.FindStringSubmatch(log), deployWroteRow.FindStringSubmatch(log)
	if h == nil || s == nil || d == nil {
		t.Fatalf("no match: %v %v %v", h, s, d)
	}
	if seconds(h[2]) != 63.68 || seconds(s[1]) != 107.5 || s[2] != "270000000" || seconds(d[1]) != 52.31 {
		t.Errorf("figures %v %v %v", h, s, d)
	}
}
