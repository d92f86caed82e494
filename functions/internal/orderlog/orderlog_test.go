package orderlog_test

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/orderflow/orderflow/functions/internal/orderlog"
	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/function"
	"github.com/orderflow/orderflow/runtime/partition"
	"github.com/orderflow/orderflow/runtime/state"
)

func rec(event string, payload proto.Message) state.Record {
	data, err := proto.Marshal(payload)
	if err != nil {
		panic(err)
	}
	return state.Record{
		Subject: orderlog.Subject("o-1", event),
		Time:    time.Unix(1700000000, 0),
		Type:    string(payload.ProtoReflect().Descriptor().FullName()),
		Data:    data,
	}
}

var (
	created   = rec(orderlog.Created, &ordersv1.OrderCreated{Order: &ordersv1.Order{OrderId: "o-1", TotalMinor: 10}})
	reserved  = rec(orderlog.StockReserved, &ordersv1.StockReserved{OrderId: "o-1"})
	charged   = rec(orderlog.PaymentCharged, &ordersv1.PaymentCharged{OrderId: "o-1"})
	declined  = rec(orderlog.PaymentDeclined, &ordersv1.PaymentDeclined{OrderId: "o-1", Reason: "limit"})
	released  = rec(orderlog.StockReleased, &ordersv1.StockReleased{OrderId: "o-1", Reason: "payment declined"})
	sold      = rec(orderlog.StockSold, &ordersv1.StockSold{OrderId: "o-1"})
	rejected  = rec(orderlog.StockRejected, &ordersv1.StockRejected{OrderId: "o-1", Reason: "no stock"})
	cancelReq = rec(orderlog.CancelRequested, &ordersv1.CancelRequested{OrderId: "o-1", Reason: "customer"})
)

func TestFold(t *testing.T) {
	bareRelease := rec(orderlog.StockReleased, &ordersv1.StockReleased{OrderId: "o-1"})
	tests := []struct {
		name       string
		recs       []state.Record
		wantStatus ordersv1.OrderStatus
		wantReason string
		wantEvents int
	}{
		{"created", []state.Record{created}, ordersv1.OrderStatus_ORDER_STATUS_PENDING, "", 1},
		{"paid, not sold yet", []state.Record{created, reserved, charged}, ordersv1.OrderStatus_ORDER_STATUS_PAID, "", 3},
		{"sold confirms", []state.Record{created, reserved, charged, sold}, ordersv1.OrderStatus_ORDER_STATUS_CONFIRMED, "", 4},
		{"rejected stock rejects", []state.Record{created, rejected}, ordersv1.OrderStatus_ORDER_STATUS_REJECTED, "no stock", 2},
		{"released stock cancels", []state.Record{created, reserved, declined, released}, ordersv1.OrderStatus_ORDER_STATUS_CANCELLED, "payment declined", 4},
		{"a release without reason takes the cancel's", []state.Record{created, reserved, cancelReq, bareRelease}, ordersv1.OrderStatus_ORDER_STATUS_CANCELLED, "customer", 4},
		{"a requested cancellation is the reason, whatever released", []state.Record{created, reserved, cancelReq, declined, released}, ordersv1.OrderStatus_ORDER_STATUS_CANCELLED, "customer", 5},
		{"cancel requested, not released yet", []state.Record{created, reserved, cancelReq}, ordersv1.OrderStatus_ORDER_STATUS_RESERVED, "", 3},
		{"a sale after a cancel request does not confirm", []state.Record{created, reserved, charged, cancelReq, sold}, ordersv1.OrderStatus_ORDER_STATUS_PAID, "", 5},
		{"terminal never changes", []state.Record{created, rejected, reserved, charged, sold, released}, ordersv1.OrderStatus_ORDER_STATUS_REJECTED, "no stock", 6},
		{"confirmed is not cancelled by later events", []state.Record{created, reserved, charged, sold, cancelReq, released}, ordersv1.OrderStatus_ORDER_STATUS_CONFIRMED, "", 6},
		{"status never goes back", []state.Record{created, charged, reserved}, ordersv1.OrderStatus_ORDER_STATUS_PAID, "", 3},
		{"events before creation are ignored", []state.Record{reserved, created}, ordersv1.OrderStatus_ORDER_STATUS_PENDING, "", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := range tt.recs {
				tt.recs[i].Sequence = uint64(i + 1)
			}
			st, err := orderlog.Fold(tt.recs)
			if err != nil {
				t.Fatal(err)
			}
			o, hist := st.Order, st.Events
			if o.Status != tt.wantStatus || o.Reason != tt.wantReason || len(hist) != tt.wantEvents {
				t.Errorf("got %s %q with %d events, want %s %q with %d", o.Status, o.Reason, len(hist), tt.wantStatus, tt.wantReason, tt.wantEvents)
			}
			if o.OrderId != "o-1" || o.TotalMinor != 10 {
				t.Errorf("order fields lost: %v", o)
			}
			if st.LastSequence != uint64(len(tt.recs)) {
				t.Errorf("LastSequence = %d, want %d", st.LastSequence, len(tt.recs))
			}
		})
	}
}

func TestFoldErrors(t *testing.T) {
	if _, err := orderlog.Fold(nil); !errors.Is(err, function.ErrNotFound) {
		t.Errorf("Fold(nil) = %v, want ErrNotFound", err)
	}
}

// A message on an order's subjects that is not one of its events (no type,
// a type that is not the subject's, an unknown event, a payload that does
// not decode) is not history: the fold skips it, whoever wrote it, and the
// order reads as before. Its sequence still counts for appends, as the
// server's check counts it.
func TestFoldIgnoresForeignMessages(t *testing.T) {
	base, err := orderlog.Fold(seq(created, reserved))
	if err != nil {
		t.Fatal(err)
	}
	noType := charged
	noType.Type = ""
	wrongType := rec(orderlog.PaymentCharged, &ordersv1.StockSold{OrderId: "o-1"})
	unknown := charged
	unknown.Subject = orderlog.Subject("o-1", "free_money")
	wrongSlot := charged
	wrongSlot.Subject = "ORDER.99.o-1.payment_charged"
	corrupt := charged
	corrupt.Data = []byte("\xff")
	evil := charged
	evil.Type = "evil.Type"
	for name, foreign := range map[string]state.Record{"no type": noType, "type of another event": wrongType,
		"unknown event": unknown, "corrupt payload": corrupt, "unknown type": evil, "another slot": wrongSlot} {
		t.Run(name, func(t *testing.T) {
			recs := seq(created, reserved, foreign)
			got, err := orderlog.Fold(recs)
			if err != nil {
				t.Fatalf("Fold = %v", err)
			}
			if got.Order.GetStatus() != base.Order.GetStatus() || len(got.Events) != len(base.Events) {
				t.Errorf("a foreign message changed the order: %s with %d events, want %s with %d",
					got.Order.GetStatus(), len(got.Events), base.Order.GetStatus(), len(base.Events))
			}
			if got.LastSequence != recs[2].Sequence {
				t.Errorf("last sequence %d, want %d", got.LastSequence, recs[2].Sequence)
			}
		})
	}
	if err := orderlog.CheckEvent(orderlog.Subject("o-1", orderlog.PaymentCharged), "orders.v1.PaymentCharged"); err != nil {
		t.Errorf("CheckEvent of a real event: %v", err)
	}
}

func TestOrderID(t *testing.T) {
	slot := partition.Token("o-1")
	other := partition.Token("o-2")
	for subject, want := range map[string]string{
		"ORDER." + slot + ".o-1.created":  "o-1",
		orderlog.Subject("o-1", "x"):      "o-1",
		"ORDER." + other + ".o-1.created": "", // not the order's slot
		"ORDER.o-1.created":               "", // the layout before partitions
		"ORDER." + slot + ".o-1":          "",
		"DEADLETTER.x":                    "",
		"ORDER." + slot + "..created":     "",
		"ORDER.a.b.c.d":                   "",
	} {
		if got := orderlog.OrderID(subject); got != want {
			t.Errorf("OrderID(%q) = %q, want %q", subject, got, want)
		}
	}
}

// seq numbers records as the stream would, 1, 2, ...
func seq(recs ...state.Record) []state.Record {
	out := make([]state.Record, len(recs))
	for i, r := range recs {
		r.Sequence = uint64(i + 1)
		out[i] = r
	}
	return out
}
