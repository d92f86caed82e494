package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// fsyncRate is the disk's rate of small fsynced appends with files
// writers, one file each: what a stream with `sync_interval: always` does
// per message (nats-server fsyncs an R1 stream's messages one at a time).
type fsyncRate struct {
	Files  int
	PerS   float64
	Length time.Duration
}

// probeFsync appends 128 bytes and fsyncs, in a loop, in files files in
// dir at once for d, and returns the fsyncs per second over all of them.
func probeFsync(dir string, files int, d time.Duration) (fsyncRate, error) {
	res := fsyncRate{Files: files, Length: d}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	var n atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, files)
	stop := time.Now().Add(d)
	buf := make([]byte, 128)
	for i := range files {
		wg.Go(func() {
			path := filepath.Join(dir, fmt.Sprintf("fsync-%d", i))
			f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if err != nil {
				errs[i] = err
				return
			}
			defer os.Remove(path)
			defer f.Close()
			for time.Now().Before(stop) {
				if _, err := f.Write(buf); err != nil {
					errs[i] = err
					return
				}
				if err := f.Sync(); err != nil {
					errs[i] = err
					return
				}
				n.Add(1)
			}
		})
	}
	start := time.Now()
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return res, err
		}
	}
	res.PerS = float64(n.Load()) / time.Since(start).Seconds()
	return res, nil
}

// probeDisk measures the fsync rate for each count of parallel files, on
// the disk the servers' stores are on.
func probeDisk(dir string, counts []int) ([]fsyncRate, error) {
	var out []fsyncRate
	for _, n := range counts {
		logf("[disk] fsync probe, %d file(s)", n)
		r, err := probeFsync(filepath.Join(dir, "fsync"), n, 3*time.Second)
		if err != nil {
			return nil, fmt.Errorf("fsync probe: %w", err)
		}
		out = append(out, r)
	}
	return out, nil
}
