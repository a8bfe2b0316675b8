package testenv

import (
	"bytes"
	"sync"
)

// SyncBuffer is a bytes.Buffer that a writing goroutine (an exec.Cmd's
// output copier, a device) and a reading test may share.
type SyncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns a copy of the contents.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
