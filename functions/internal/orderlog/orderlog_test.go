package orderlog_test

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/orderflow/orderflow/functions/internal/orderlog"
	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/function"
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
	released  = rec(orderlog.StockReleased, &ordersv1.StockReleased{OrderId: "o-1"})
	sold      = rec(orderlog.StockSold, &ordersv1.StockSold{OrderId: "o-1"})
	confirmed = rec(orderlog.Confirmed, &ordersv1.OrderConfirmed{OrderId: "o-1"})
	rejected  = rec(orderlog.Rejected, &ordersv1.OrderRejected{OrderId: "o-1", Reason: "no stock"})
	cancelled = rec(orderlog.Cancelled, &ordersv1.OrderCancelled{OrderId: "o-1", Reason: "payment declined"})
)

func TestFold(t *testing.T) {
	tests := []struct {
		name       string
		recs       []state.Record
		wantStatus ordersv1.OrderStatus
		wantReason string
		wantEvents int
	}{
		{"created", []state.Record{created}, ordersv1.OrderStatus_ORDER_STATUS_PENDING, "", 1},
		{"confirmed", []state.Record{created, reserved, charged, sold, confirmed}, ordersv1.OrderStatus_ORDER_STATUS_CONFIRMED, "", 5},
		{"rejected", []state.Record{created, rejected}, ordersv1.OrderStatus_ORDER_STATUS_REJECTED, "no stock", 2},
		{"cancelled", []state.Record{created, reserved, declined, released, cancelled}, ordersv1.OrderStatus_ORDER_STATUS_CANCELLED, "payment declined", 5},
		{"terminal never changes", []state.Record{created, rejected, reserved, charged, confirmed}, ordersv1.OrderStatus_ORDER_STATUS_REJECTED, "no stock", 5},
		{"status never goes back", []state.Record{created, charged, reserved}, ordersv1.OrderStatus_ORDER_STATUS_PAID, "", 3},
		{"events before creation are ignored", []state.Record{reserved, created}, ordersv1.OrderStatus_ORDER_STATUS_PENDING, "", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
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
		})
	}
}

func TestFoldErrors(t *testing.T) {
	if _, err := orderlog.Fold(nil); !errors.Is(err, function.ErrNotFound) {
		t.Errorf("Fold(nil) = %v, want ErrNotFound", err)
	}
	bad := created
	bad.Type = "evil.Type"
	if _, err := orderlog.Fold([]state.Record{bad}); err == nil {
		t.Error("Fold accepted an unknown event type")
	}
	bad = created
	bad.Data = []byte("\xff")
	if _, err := orderlog.Fold([]state.Record{bad}); err == nil {
		t.Error("Fold accepted a corrupt payload")
	}
}

func TestTerminalEventsShareOneMessageID(t *testing.T) {
	ids := map[string]bool{}
	for _, e := range []string{orderlog.Confirmed, orderlog.Rejected, orderlog.Cancelled} {
		ids[orderlog.EventID("o-1", e)] = true
	}
	if len(ids) != 1 {
		t.Errorf("terminal events have ids %v; they must share one so only one is stored", ids)
	}
	if orderlog.EventID("o-1", orderlog.Created) == orderlog.EventID("o-1", orderlog.StockReserved) {
		t.Error("non-terminal events share an id")
	}
}

func TestOutcome(t *testing.T) {
	cancelReq := rec(orderlog.CancelRequested, &ordersv1.CancelRequested{OrderId: "o-1", Reason: "customer"})
	rejectedStock := rec(orderlog.StockRejected, &ordersv1.StockRejected{OrderId: "o-1", Reason: "no stock"})
	releasedStock := rec(orderlog.StockReleased, &ordersv1.StockReleased{OrderId: "o-1", Reason: "payment declined"})
	tests := []struct {
		name string
		recs []state.Record
		want string
	}{
		{"pending", []state.Record{created}, ""},
		{"paid, not sold yet", []state.Record{created, reserved, charged}, ""},
		{"sold", []state.Record{created, reserved, charged, sold}, orderlog.Confirmed},
		{"sold after a cancel request", []state.Record{created, reserved, charged, cancelReq, sold}, ""},
		{"cancel requested, not released yet", []state.Record{created, reserved, cancelReq}, ""},
		{"released", []state.Record{created, reserved, declined, releasedStock}, orderlog.Cancelled},
		{"sold, then released by a cancel", []state.Record{created, reserved, charged, cancelReq, sold, releasedStock}, orderlog.Cancelled},
		{"rejected stock", []state.Record{created, rejectedStock}, orderlog.Rejected},
		{"rejected stock, then a cancel", []state.Record{created, rejectedStock, cancelReq}, orderlog.Rejected},
		{"already terminal", []state.Record{created, reserved, charged, sold, confirmed}, ""},
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
			if got, _ := st.Outcome(); got != tt.want {
				t.Errorf("Outcome = %q, want %q", got, tt.want)
			}
			if st.LastSequence != uint64(len(tt.recs)) {
				t.Errorf("LastSequence = %d, want %d", st.LastSequence, len(tt.recs))
			}
		})
	}
	st, _ := orderlog.Fold([]state.Record{created, reserved, declined, releasedStock})
	if _, p := st.Outcome(); p.(*ordersv1.OrderCancelled).GetReason() != "payment declined" {
		t.Errorf("cancel reason %q", p.(*ordersv1.OrderCancelled).GetReason())
	}
}

func TestOrderID(t *testing.T) {
	for subject, want := range map[string]string{
		"ORDER.o-1.created": "o-1",
		"ORDER.o-1":         "",
		"DEADLETTER.x":      "",
		"ORDER..created":    "",
		"ORDER.a.b.c":       "",
	} {
		if got := orderlog.OrderID(subject); got != want {
			t.Errorf("OrderID(%q) = %q, want %q", subject, got, want)
		}
	}
}
