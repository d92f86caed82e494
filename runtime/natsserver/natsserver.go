// Package natsserver runs the embedded NATS server that makes
// `go run ./functions` a whole system on a machine with only Go.
package natsserver

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
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
// server's own signal handling and logging are off: the host owns both.
func Start(opts *server.Options) (*server.Server, error) {
	opts.NoSigs = true
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	if !opts.NoLog {
		s.ConfigureLogger()
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("nats server: not ready after 10s (is port %d in use?)", opts.Port)
	}
	return s, nil
}
