// Package natsserver runs the embedded NATS server that makes
// `go run ./functions` a whole system on a machine with only Go.
package natsserver

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// DefaultConf is the config file looked for in the working directory.
const DefaultConf = "nats.conf"

// Defaults are the settings of nats.conf, built in so the binary runs from
// any directory. A test keeps the two in step.
func Defaults() *server.Options {
	return &server.Options{
		ServerName: "orderflow",
		Host:       "127.0.0.1",
		Port:       4222,
		HTTPHost:   "127.0.0.1",
		HTTPPort:   8222,
		JetStream:  true,
		StoreDir:   "./data",
		SyncAlways: true,
	}
}

// Load returns the server options from path. An empty path means nats.conf
// in the working directory if it exists, else Defaults; a path given
// explicitly must exist.
func Load(path string) (*server.Options, error) {
	explicit := path != ""
	if !explicit {
		path = DefaultConf
	}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) && !explicit {
		return Defaults(), nil
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		return nil, fmt.Errorf("nats config %s: %w", path, err)
	}
	return opts, nil
}

// Start runs a server with opts and waits until it takes connections. The
// server's own signal handling is off: the host owns it. With opts.NoLog
// the server's log is off too, but its errors are kept: a server that
// cannot start (a port in use, a store it cannot open) says why, at once.
func Start(opts *server.Options) (*server.Server, error) {
	opts.NoSigs = true
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	errs := &errorLog{fatal: make(chan string, 1)}
	if opts.NoLog {
		s.SetLoggerV2(errs, false, false, false)
	} else {
		s.ConfigureLogger()
	}
	go s.Start()
	deadline := time.Now().Add(10 * time.Second)
	for !s.ReadyForConnections(50 * time.Millisecond) {
		select {
		case msg := <-errs.fatal:
			s.Shutdown()
			return nil, fmt.Errorf("nats server: %s", msg)
		default:
		}
		if time.Now().After(deadline) {
			s.Shutdown()
			if last := errs.last(); last != "" {
				return nil, fmt.Errorf("nats server: not ready after 10s: %s", last)
			}
			return nil, fmt.Errorf("nats server: not ready after 10s")
		}
	}
	return s, nil
}

// errorLog keeps what the server reports as errors, and passes on the
// first fatal one.
type errorLog struct {
	mu    sync.Mutex
	errs  []string
	fatal chan string
}

func (l *errorLog) Noticef(string, ...any) {}
func (l *errorLog) Warnf(string, ...any)   {}
func (l *errorLog) Debugf(string, ...any)  {}
func (l *errorLog) Tracef(string, ...any)  {}

func (l *errorLog) Errorf(format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, fmt.Sprintf(format, v...))
}

func (l *errorLog) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.Errorf("%s", msg)
	select {
	case l.fatal <- msg:
	default:
	}
}

func (l *errorLog) last() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) == 0 {
		return ""
	}
	return l.errs[len(l.errs)-1]
}
