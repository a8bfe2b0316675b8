package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/godwit-vmm/godwit/internal/tools/toolkit"
)

// loopbackSendCmd is the hidden subcommand of the re-executed sender.
const loopbackSendCmd = "__loopback-send"

const (
	loopbackBuf   = 256 << 20 // mmap'd buffer on each side
	loopbackChunk = 4 << 20   // bytes per write/read call
	loopbackRuns  = 3
)

type loopbackRun struct {
	Bytes uint64  `json:"bytes"`
	Secs  float64 `json:"seconds"`
	GBs   float64 `json:"gb_s"` // 10^9 bytes/s
}

type loopbackResult struct {
	GiB  int           `json:"gib_per_run"`
	Runs []loopbackRun `json:"runs"`
	GBs  *stat         `json:"gb_s"`
}

// benchLoopback measures plain loopback TCP: a second process (this
// program re-executed) sends e.loopbackGiB GiB; this one receives and times
// first byte to end of stream.
func benchLoopback(e *env) (*loopbackResult, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	buf, err := mmapBuf(loopbackBuf)
	if err != nil {
		return nil, err
	}
	defer unix.Munmap(buf)
	total := uint64(e.loopbackGiB) << 30
	res := &loopbackResult{GiB: e.loopbackGiB}
	var v []float64
	for i := 1; i <= loopbackRuns; i++ {
		r, err := loopbackOnce(self, buf, total)
		if err != nil {
			return res, err
		}
		res.Runs = append(res.Runs, r)
		v = append(v, r.GBs)
		progress("loopback: run %d: %.2f GB/s (%d MiB in %.3f s)", i, r.GBs, r.Bytes>>20, r.Secs)
	}
	res.GBs = summarize(v)
	return res, nil
}

func loopbackOnce(self string, buf []byte, total uint64) (loopbackRun, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return loopbackRun{}, err
	}
	defer ln.Close()
	p, err := toolkit.Start("loopback-send", []string{self, loopbackSendCmd, "--to", ln.Addr().String(),
		"--bytes", strconv.FormatUint(total, 10)}, toolkit.Options{Stderr: os.Stderr})
	if err != nil {
		return loopbackRun{}, err
	}
	defer p.Stop(2 * time.Second)
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(30 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		return loopbackRun{}, fmt.Errorf("loopback: accept: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	var (
		n     uint64
		off   int
		start time.Time
	)
	for {
		end := min(off+loopbackChunk, len(buf))
		k, err := c.Read(buf[off:end])
		if k > 0 && n == 0 {
			start = time.Now()
		}
		n += uint64(k)
		off += k
		if off == len(buf) {
			off = 0
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return loopbackRun{}, fmt.Errorf("loopback: read: %w", err)
		}
	}
	secs := time.Since(start).Seconds()
	if !p.WaitExit(10*time.Second) || p.Err() != nil {
		return loopbackRun{}, fmt.Errorf("loopback: sender failed: %v", p.Err())
	}
	if n != total {
		return loopbackRun{}, fmt.Errorf("loopback: received %d bytes, want %d", n, total)
	}
	return loopbackRun{Bytes: n, Secs: secs, GBs: float64(n) / secs / 1e9}, nil
}

// loopbackSend is the sending process: it writes --bytes bytes from a
// prefaulted mmap'd buffer in large writes, then closes.
func loopbackSend(args []string) error {
	fs := flag.NewFlagSet(loopbackSendCmd, flag.ContinueOnError)
	to := fs.String("to", "", "receiver address")
	total := fs.Uint64("bytes", 0, "bytes to send")
	if err := fs.Parse(args); err != nil {
		return err
	}
	buf, err := mmapBuf(loopbackBuf)
	if err != nil {
		return err
	}
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = byte(i>>12) | 1 // not zero: real data
	}
	c, err := net.Dial("tcp", *to)
	if err != nil {
		return err
	}
	defer c.Close()
	var sent uint64
	off := 0
	for sent < *total {
		k := min(uint64(loopbackChunk), *total-sent, uint64(len(buf)-off))
		n, err := c.Write(buf[off : off+int(k)])
		if err != nil {
			return err
		}
		sent += uint64(n)
		off = (off + n) % len(buf)
	}
	return c.(*net.TCPConn).CloseWrite()
}

// mmapBuf maps size bytes of anonymous memory and faults every page in.
func mmapBuf(size int) ([]byte, error) {
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("mmap %d MiB: %w", size>>20, err)
	}
	return b, nil
}
