package main

import (
	"os"
	"testing"
	"time"
)

func TestParseBench(t *testing.T) {
	tests := []struct {
		out       string
		rate, p99 float64
	}{
		{"NATS JetStream synchronous publisher stats: 2,930 msgs/sec ~ 366 KiB/sec ~ min: 206.18us ~ avg: 340.93us ~ max: 9,044.97us ~ P50: 317.49us ~ P90: 397.03us ~ P99: 876.81us ~ P99.9: 2,320.35us", 2930, 0.87681},
		{"  [1] 4,559 msgs/sec ~ P99: 623.06us ~ P99.9: 2,389.85us (5,000 msgs)\n NATS Core NATS service requester aggregated stats: 35,918 msgs/sec ~ 4.4 MiB/sec\n latencies per operation min 26.68us | P99 656.14us | P99.9: 2,320.27us", 35918, 0.65614},
		{"stats: 100 msgs/sec ~ P99: 1.5ms", 100, 1.5},
	}
	for _, tt := range tests {
		got, err := parseBench(tt.out)
		if err != nil {
			t.Fatal(err)
		}
		if got.MsgsPerS != tt.rate || got.P99Ms < tt.p99-1e-9 || got.P99Ms > tt.p99+1e-9 {
			t.Errorf("parseBench = %+v, want %v msgs/s and p99 %vms", got, tt.rate, tt.p99)
		}
	}
	if _, err := parseBench("nothing here"); err == nil {
		t.Error("parseBench accepted output without a rate")
	}
}

func TestProbeFsync(t *testing.T) {
	dir := t.TempDir()
	got, err := probeFsync(dir, 2, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if got.Files != 2 || got.PerS <= 0 {
		t.Errorf("probeFsync = %+v, want 2 files and a rate", got)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("probe left %d files", len(left))
	}
}
