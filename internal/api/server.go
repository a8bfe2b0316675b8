package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/godwit-vmm/godwit/internal/migration"
	"github.com/godwit-vmm/godwit/internal/vm"
)

// Controller is what the server drives: a running VM.
type Controller interface {
	Status() vm.Status
	Pause() error
	Resume() error
	Stop(reason string)
	ConsoleInput(b []byte)
	// Migrate moves the VM to another VMM and returns when done.
	Migrate(ctx context.Context, req MigrateRequest) (*migration.Report, error)
	// MigrationProgress reports the migration under way, if any.
	MigrationProgress() (migration.Progress, bool)
	// CancelMigration cancels the migration under way, if any.
	CancelMigration() bool
	// SetMigrationLimits changes the limits of the migration under way
	// (fields left nil keep their value) and returns those in force;
	// ErrNoMigration when none runs.
	SetMigrationLimits(l MigrationLimits) (MigrationLimits, error)
}

// MigrationLimits is the body of PATCH /v1/vm/migration and its answer:
// the running migration's downtime target, longest downtime accepted and
// bandwidth cap in bytes/s (0: none). Nil fields are left as they are.
type MigrationLimits struct {
	DowntimeMs    *float64 `json:"downtime_ms,omitempty"`
	MaxDowntimeMs *float64 `json:"max_downtime_ms,omitempty"`
	Bandwidth     *uint64  `json:"bandwidth,omitempty"`
}

// ErrNoMigration is what SetMigrationLimits returns when no migration
// runs.
var ErrNoMigration = errors.New("no migration under way")

// MigrateRequest is the body of PUT /v1/vm/migrate.
type MigrateRequest struct {
	To         string  `json:"to"`                    // destination host:port
	Streams    int     `json:"streams,omitempty"`     // data connections (default 2)
	Verify     bool    `json:"verify,omitempty"`      // CRC32C check of all RAM before commit
	DowntimeMs float64 `json:"downtime_ms,omitempty"` // downtime target
	MaxDownMs  float64 `json:"max_downtime_ms,omitempty"`
	Bandwidth  uint64  `json:"bandwidth,omitempty"` // bytes/s, 0 = unlimited
	MaxRounds  int     `json:"max_rounds,omitempty"`
	MaxSeconds float64 `json:"max_seconds,omitempty"`
	NoThrottle bool    `json:"no_auto_converge,omitempty"`
	// In a pool: the VM's owner key revision when the migration started
	// and the migration's ID, which guard the switchover (set by agents).
	OwnerRev    int64  `json:"owner_rev,omitempty"`
	MigrationID string `json:"migration_id,omitempty"`
	// Peer, in a pool, is the destination host: the VMM (run with
	// --credential) accepts only that host's certificate.
	Peer string `json:"peer,omitempty"`
}

// MigrateReply is the answer to PUT /v1/vm/migrate: the report, and the
// error if the migration did not complete.
type MigrateReply struct {
	Report *migration.Report `json:"report"`
	Error  string            `json:"error,omitempty"`
}

// maxConsoleInput bounds one console write.
const maxConsoleInput = 64 << 10

// Server serves the API of one VM on a Unix socket.
type Server struct {
	path string
	l    net.Listener
	http *http.Server
}

// Serve starts serving ctl on the socket at path. Close stops it and removes
// the socket.
func Serve(path string, ctl Controller, log *slog.Logger) (*Server, error) {
	l, err := listen(path)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/vm", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, ctl.Status())
	})
	mux.HandleFunc("PUT /v1/vm/pause", func(w http.ResponseWriter, r *http.Request) {
		if err := ctl.Pause(); err != nil {
			replyErr(w, http.StatusConflict, err)
			return
		}
		reply(w, http.StatusOK, ctl.Status())
	})
	mux.HandleFunc("PUT /v1/vm/resume", func(w http.ResponseWriter, r *http.Request) {
		if err := ctl.Resume(); err != nil {
			replyErr(w, http.StatusConflict, err)
			return
		}
		reply(w, http.StatusOK, ctl.Status())
	})
	mux.HandleFunc("PUT /v1/vm/stop", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, map[string]string{"result": "stopping"})
		// Stop after the reply is written: stopping ends the process.
		go ctl.Stop("stopped through the API")
	})
	mux.HandleFunc("PUT /v1/vm/console", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(io.LimitReader(r.Body, maxConsoleInput+1))
		if err != nil {
			replyErr(w, http.StatusBadRequest, err)
			return
		}
		if len(b) > maxConsoleInput {
			replyErr(w, http.StatusRequestEntityTooLarge, errors.New("console input over 64 KiB: send it in pieces"))
			return
		}
		ctl.ConsoleInput(b)
		reply(w, http.StatusOK, map[string]int{"bytes": len(b)})
	})
	mux.HandleFunc("PUT /v1/vm/migrate", func(w http.ResponseWriter, r *http.Request) {
		var req MigrateRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
			replyErr(w, http.StatusBadRequest, fmt.Errorf("bad migrate request: %w", err))
			return
		}
		if req.To == "" {
			replyErr(w, http.StatusBadRequest, errors.New("migrate: the destination (to) is required"))
			return
		}
		rep, err := ctl.Migrate(r.Context(), req)
		out := MigrateReply{Report: rep}
		if err != nil {
			out.Error = err.Error()
			if rep == nil {
				replyErr(w, http.StatusConflict, err)
				return
			}
		}
		reply(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /v1/vm/migration", func(w http.ResponseWriter, r *http.Request) {
		p, ok := ctl.MigrationProgress()
		if !ok {
			replyErr(w, http.StatusNotFound, errors.New("no migration under way"))
			return
		}
		reply(w, http.StatusOK, p)
	})
	mux.HandleFunc("PATCH /v1/vm/migration", func(w http.ResponseWriter, r *http.Request) {
		var l MigrationLimits
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<12)).Decode(&l); err != nil {
			replyErr(w, http.StatusBadRequest, fmt.Errorf("bad migration limits: %w", err))
			return
		}
		now, err := ctl.SetMigrationLimits(l)
		switch {
		case errors.Is(err, ErrNoMigration):
			replyErr(w, http.StatusNotFound, err)
		case err != nil:
			replyErr(w, http.StatusBadRequest, err)
		default:
			reply(w, http.StatusOK, now)
		}
	})
	mux.HandleFunc("DELETE /v1/vm/migration", func(w http.ResponseWriter, r *http.Request) {
		if !ctl.CancelMigration() {
			replyErr(w, http.StatusNotFound, errors.New("no migration under way"))
			return
		}
		reply(w, http.StatusOK, map[string]string{"result": "cancelling"})
	})
	s := &Server{path: path, l: l, http: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	go func() {
		if err := s.http.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("api server stopped", "err", err)
		}
	}()
	return s, nil
}

// Path returns the socket path.
func (s *Server) Path() string { return s.path }

// Close stops the server and removes its socket.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := s.http.Shutdown(ctx)
	os.Remove(s.path)
	return err
}

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func replyErr(w http.ResponseWriter, code int, err error) {
	reply(w, code, map[string]string{"error": err.Error()})
}
