package createorder

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderflow/orderflow/functions/internal/orderlog"
	ordersv1 "github.com/orderflow/orderflow/proto/gen/orders/v1"
	"github.com/orderflow/orderflow/runtime/state"
)

// SecretsBucket holds the key order ids are derived from; only the orders
// identity may read it.
const SecretsBucket = "secrets"

// idKeyName is the key's name in SecretsBucket.
const idKeyName = "order-id"

// LegacyWindow is how long after the key is first made in a store that
// already holds orders a create also looks for its order under the id the
// previous derivation gave: longer than any client keeps retrying.
const LegacyWindow = 24 * time.Hour

// legacyNamespace scoped the ids of the previous derivation (a UUIDv5 of
// customer and key, with no secret: predictable by anyone).
var legacyNamespace = uuid.MustParse("6f1b7f0e-6a43-4d0c-9a53-5b1f3f3c2a10")

// ids derives order ids from Idempotency-Keys: an HMAC of customer and key
// under a secret kept in a bucket only the orders identity can read, so a
// retry finds its first order and nobody can predict another customer's.
// The first pod to need the secret makes it.
type ids struct {
	secrets state.Store
	log     state.Log
	now     func() time.Time

	mu  sync.Mutex
	key *ordersv1.OrderIDKey
}

// forKey is the order id of (customer, key), and, within the legacy
// window, the id the previous derivation gave it ("" otherwise).
func (d *ids) forKey(ctx context.Context, customer, key string) (id, legacy string, err error) {
	k, err := d.load(ctx)
	if err != nil {
		return "", "", err
	}
	mac := hmac.New(sha256.New, k.GetKey())
	mac.Write([]byte(customer))
	mac.Write([]byte{0})
	mac.Write([]byte(key))
	var u uuid.UUID
	copy(u[:], mac.Sum(nil))
	u[6] = u[6]&0x0f | 0x80 // version 8: custom
	u[8] = u[8]&0x3f | 0x80 // RFC 9562 variant
	if lu := k.GetLegacyUntil(); lu != nil && d.now().Before(lu.AsTime()) {
		legacy = uuid.NewSHA1(legacyNamespace, []byte(customer+"\x00"+key)).String()
	}
	return u.String(), legacy, nil
}

// load returns the key, making it if there is none yet. It is read once per
// process: after a rotation, restart the orders pods.
func (d *ids) load(ctx context.Context) (*ordersv1.OrderIDKey, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.key != nil {
		return d.key, nil
	}
	for attempt := 1; ; attempt++ {
		k, _, err := state.Get[ordersv1.OrderIDKey](ctx, d.secrets, idKeyName)
		if err == nil {
			if len(k.GetKey()) < 32 {
				return nil, fmt.Errorf("%s/%s holds a key of %d bytes, want 32: delete it to make a new one", SecretsBucket, idKeyName, len(k.GetKey()))
			}
			d.key = k
			return k, nil
		}
		if !errors.Is(err, state.ErrNotFound) {
			return nil, fmt.Errorf("order id key: %w", err)
		}
		k = &ordersv1.OrderIDKey{Key: make([]byte, 32)}
		if _, err := rand.Read(k.Key); err != nil {
			return nil, err
		}
		// In a store that already holds orders (an upgrade), a client may
		// be retrying a create whose id came from the old derivation.
		_, existing, err := d.log.Last(ctx, orderlog.On(orderlog.Created))
		if err != nil {
			return nil, err
		}
		if existing {
			k.LegacyUntil = timestamppb.New(d.now().Add(LegacyWindow))
		}
		_, err = d.secrets.Put(ctx, idKeyName, k, 0)
		if again, err := state.Again(ctx, attempt, err); again {
			continue // another pod made it first: use theirs
		} else if err != nil {
			return nil, fmt.Errorf("order id key: %w", err)
		}
		d.key = k
		return k, nil
	}
}
