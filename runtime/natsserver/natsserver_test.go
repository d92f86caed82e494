package natsserver_test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/orderflow/orderflow/runtime/natsserver"
)

// The built-in defaults are nats.conf: a binary run outside the repository
// behaves as one run inside it.
func TestDefaultsMatchNatsConf(t *testing.T) {
	got, err := natsserver.Load("../../nats.conf")
	if err != nil {
		t.Fatal(err)
	}
	want := natsserver.Defaults()
	type view struct {
		name, host, httpHost string
		port, httpPort       int
		js, syncAlways       bool
		storeDir             string
	}
	v := func(o *server.Options) view {
		return view{o.ServerName, o.Host, o.HTTPHost, o.Port, o.HTTPPort, o.JetStream, o.SyncAlways, o.StoreDir}
	}
	if v(got) != v(want) {
		t.Errorf("nats.conf = %+v\nDefaults  = %+v", v(got), v(want))
	}
	if !got.SyncAlways {
		t.Error("nats.conf must fsync every write (sync_interval: always)")
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	o, err := natsserver.Load("")
	if err != nil || o.Port != 4222 || !o.SyncAlways {
		t.Errorf("Load without nats.conf = %+v, %v; want the defaults", o, err)
	}
	if _, err := natsserver.Load(filepath.Join(dir, "missing.conf")); err == nil {
		t.Error("Load of an explicit missing file succeeded")
	}
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, []byte("port: 4333\njetstream { store_dir: \"./js\" }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if o, err := natsserver.Load(""); err != nil || o.Port != 4333 || o.StoreDir != "./js" {
		t.Errorf("Load with nats.conf in the working directory = %+v, %v", o, err)
	}
	if err := os.WriteFile(conf, []byte("port: {{{\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := natsserver.Load(""); err == nil {
		t.Error("Load of a broken nats.conf succeeded")
	}
}

func TestStart(t *testing.T) {
	o := natsserver.Defaults()
	o.Port, o.HTTPPort, o.StoreDir, o.NoLog = -1, 0, t.TempDir(), true
	s, err := natsserver.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	if !s.JetStreamEnabled() {
		t.Error("JetStream is off")
	}
}

// A server that cannot start says why, at once: here its monitoring port
// is taken.
func TestStartReportsTheServersError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	opts := natsserver.Defaults()
	opts.Port, opts.HTTPPort, opts.StoreDir, opts.NoLog = -1, ln.Addr().(*net.TCPAddr).Port, t.TempDir(), true
	start := time.Now()
	s, err := natsserver.Start(opts)
	if err == nil {
		s.Shutdown()
		t.Fatal("started with its monitoring port taken")
	}
	if took := time.Since(start); took > 5*time.Second || !strings.Contains(err.Error(), "monitor") {
		t.Errorf("after %s: %v; want the server's own error, at once", took, err)
	}
}
