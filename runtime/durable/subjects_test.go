package durable_test

import "github.com/orderflow/orderflow/runtime/partition"

// eventSubject is the event subject of an order's event (or ">" for all of them),
// on the order's slot: ORDER.<slot>.<id>.<event>.
func eventSubject(id, event string) string {
	return "ORDER." + partition.Token(id) + "." + id + "." + event
}
