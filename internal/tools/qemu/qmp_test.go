package qemu

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// recorded is every line QEMU 7.2 sent in one migration of the test guest
// between two TCG QEMUs (greetings, replies, events), in order.
func recorded(t testing.TB) [][]byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "qmp-7.2.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.SplitAfter(bytes.TrimSpace(b), []byte("\n"))
}

func TestDecodeRecorded(t *testing.T) {
	var kinds []Kind
	var events []string
	var stats []MigrationStats
	var errs []*Error
	for _, line := range recorded(t) {
		m, err := DecodeMessage(line)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		kinds = append(kinds, m.Kind)
		switch {
		case m.Kind == Event:
			events = append(events, m.Event)
			if m.At.Year() < 2020 {
				t.Errorf("event %s: timestamp %v", m.Event, m.At)
			}
		case m.Err != nil:
			errs = append(errs, m.Err)
		case m.Kind == Reply && string(m.ID) == `"query-migrate"`:
			s, err := ParseMigrationStats(m.Return)
			if err != nil {
				t.Fatal(err)
			}
			stats = append(stats, s)
		}
	}
	if kinds[0] != Greeting || kinds[1] != Reply {
		t.Errorf("kinds start %v, want greeting then reply", kinds[:2])
	}
	if got := strings.Join(events, ","); got != "MIGRATION,STOP,RESUME,SHUTDOWN,SHUTDOWN" {
		t.Errorf("events %s", got)
	}
	if len(errs) != 1 || errs[0].Class != "CommandNotFound" {
		t.Errorf("errors %v, want one CommandNotFound", errs)
	}
	// none (before any migration), setup ×3, active ×2, completed
	if len(stats) != 7 {
		t.Fatalf("%d query-migrate replies, want 7", len(stats))
	}
	if s := stats[0]; s.Status != "" || s.Finished() {
		t.Errorf("before migrating: %+v", s)
	}
	if s := stats[1]; s.Status != "setup" || s.Finished() {
		t.Errorf("setup: %+v", s)
	}
	if s := stats[4]; s.Status != "active" || s.Finished() || s.ExpectedDownMs != 300 || s.RAM.Total != 1091117056 || s.RAM.DirtySyncCount != 1 {
		t.Errorf("active: %+v", s)
	}
	c := stats[6]
	if c.Status != "completed" || !c.Finished() || c.TotalMs != 14425 || c.DowntimeMs != 4 || c.SetupMs != 2 ||
		c.RAM.Transferred != 3135652 || c.RAM.DirtySyncCount != 3 || c.RAM.Remaining != 0 || c.RAM.Mbps < 1.8 || c.RAM.Mbps > 1.81 {
		t.Errorf("completed: %+v", c)
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, line := range []string{
		``, `null`, `[]`, `"return"`, `{}`, `{"id": 1}`, `{"return": null}`,
		`{"return": {}, "event": "STOP"}`, `{"QMP": {}, "return": {}}`,
		`{"error": {"desc": "no class"}}`, `{"error": "text"}`,
		`{"event": ""}`, `{"event": 5}`, `{"return": {}`, `{"return": {}} trailing`,
	} {
		if m, err := DecodeMessage([]byte(line)); err == nil {
			t.Errorf("%q decoded as %+v, want an error", line, m)
		}
	}
}

// fakeQEMU serves one QMP connection on a Unix socket: the greeting, then
// for each command the replies script gives (id echoed), with an event and
// a reply to an older id before each.
func fakeQEMU(t *testing.T, script func(cmd string, id json.RawMessage) []string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "qmp")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte(`{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}` + "\r\n"))
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			var cmd struct {
				Execute string          `json:"execute"`
				ID      json.RawMessage `json:"id"`
			}
			if json.Unmarshal(sc.Bytes(), &cmd) != nil {
				return
			}
			for _, r := range script(cmd.Execute, cmd.ID) {
				c.Write([]byte(r + "\n"))
			}
		}
	}()
	return path
}

func TestClient(t *testing.T) {
	path := fakeQEMU(t, func(cmd string, id json.RawMessage) []string {
		stale := `{"return": {"status": "stale"}, "id": 999}`
		ev := `{"timestamp": {"seconds": 1796213499, "microseconds": 888085}, "event": "RESUME"}`
		switch cmd {
		case "qmp_capabilities":
			return []string{`{"return": {}, "id": ` + string(id) + `}`}
		case "query-migrate":
			return []string{stale, ev, `{"return": {"status": "completed", "total-time": 7, "ram": {"transferred": 4096}}, "id": ` + string(id) + `}`}
		default:
			return []string{`{"id": ` + string(id) + `, "error": {"class": "CommandNotFound", "desc": "The command ` + cmd + ` has not been found"}}`}
		}
	})
	q, err := DialQMP(path, 5*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	raw, err := q.Do("query-migrate", nil)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := ParseMigrationStats(raw); err != nil || s.Status != "completed" || s.TotalMs != 7 || s.RAM.Transferred != 4096 {
		t.Errorf("query-migrate: %+v, %v", s, err)
	}
	ev := q.Events("RESUME")
	if len(ev) != 1 || ev[0].At.Unix() != 1796213499 || ev[0].Arrived.IsZero() {
		t.Errorf("events %+v", ev)
	}
	_, err = q.Do("bogus", map[string]any{"x": 1})
	var qe *Error
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Errorf("bogus command: %v, want a CommandNotFound *Error", err)
	}
}

func TestClientPeerSendsGarbage(t *testing.T) {
	path := fakeQEMU(t, func(cmd string, id json.RawMessage) []string {
		if cmd == "qmp_capabilities" {
			return []string{`{"return": {}, "id": ` + string(id) + `}`}
		}
		return []string{`not json at all`}
	})
	q, err := DialQMP(path, 5*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if _, err := q.Do("query-status", nil); err == nil || !strings.Contains(err.Error(), "not a JSON object") {
		t.Errorf("garbage reply: %v, want the decoding error", err)
	}
}

func FuzzDecodeMessage(f *testing.F) {
	for _, l := range recorded(f) {
		f.Add(l)
	}
	f.Add([]byte(`{"error": {"class": "GenericError", "desc": "x"}, "id": 3}`))
	f.Add([]byte(`{"event": "STOP", "timestamp": {"seconds": -1, "microseconds": 99999999}}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		m, err := DecodeMessage(line)
		if err != nil {
			return
		}
		switch m.Kind {
		case Greeting:
		case Reply:
			if (m.Err == nil) == (m.Return == nil) {
				t.Fatalf("%q: reply with return %q and error %v", line, m.Return, m.Err)
			}
			if m.Err != nil && m.Err.Class == "" {
				t.Fatalf("%q: error without class", line)
			}
		case Event:
			if m.Event == "" {
				t.Fatalf("%q: event without name", line)
			}
		default:
			t.Fatalf("%q: kind %d", line, m.Kind)
		}
		if m.Kind == Reply && m.Return != nil {
			ParseMigrationStats(m.Return) // must not panic on any value
		}
	})
}
