// Package partition spreads keys over a fixed set of slots, and slots over
// a configurable number of partitions. A key's slot never changes (it is
// part of the subjects and keys written), so the partition count is a
// property of where slots live, not of the data: a store is provisioned
// with one count and every process must agree with it.
package partition

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
)

// Slots is the number of slots. A partition count must divide it, so every
// partition holds the same number of slots.
const Slots = 64

// ErrCount is returned for a partition count that does not divide Slots.
var ErrCount = errors.New("partition count must divide 64 (1, 2, 4, 8, 16, 32 or 64)")

// Check reports whether n is a valid partition count.
func Check(n int) error {
	if n < 1 || n > Slots || Slots%n != 0 {
		return fmt.Errorf("%w: %d", ErrCount, n)
	}
	return nil
}

// Slot is key's slot: FNV-1a (32 bits) of key, modulo Slots, the hash
// nats-server's partition() subject mapping uses, so an account mapping
// can put a key on the same slot.
func Slot(key string) int {
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % Slots)
}

// Token is the subject token of key's slot.
func Token(key string) string { return strconv.Itoa(Slot(key)) }

// Of is the partition, out of n, that holds slot.
func Of(slot, n int) int { return slot % n }

// SlotsOf lists the slots partition p of n holds.
func SlotsOf(p, n int) []int {
	var out []int
	for s := p; s < Slots; s += n {
		out = append(out, s)
	}
	return out
}

// Name is the name of partition p of the resource called name: "ORDERS_3".
func Name(name string, p int) string { return name + "_" + strconv.Itoa(p) }

// Names lists the names of the n partitions of name.
func Names(name string, n int) []string {
	out := make([]string, n)
	for p := range n {
		out[p] = Name(name, p)
	}
	return out
}
