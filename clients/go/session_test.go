package coord

import (
	"errors"
	"testing"
	"time"

	pb "github.com/coord/coord/clients/go/coordpb"
)

func bareSession(ttl time.Duration) *Session {
	return &Session{ttl: ttl, drift: 0.02, held: map[slotKey]heldSlot{}, done: make(chan struct{}),
		wake: make(chan struct{}, 1), leaderships: map[*Leadership]struct{}{}, state: StateConnected}
}

func ack(rev int64, held ...*pb.Held) *pb.KeepAliveResponse {
	return &pb.KeepAliveResponse{Header: &pb.ResponseHeader{Revision: rev}, Held: held}
}

func TestValidityRunsFromTheSendTimeOfTheNewestAck(t *testing.T) {
	s := bareSession(10 * time.Second)
	s.acked(5*time.Second, ack(1))
	if want := 5*time.Second + 9800*time.Millisecond; s.validUntil != want {
		t.Fatalf("valid until %v, want %v", s.validUntil, want)
	}
	s.acked(2*time.Second, ack(1)) // an older keepalive's late answer never shortens it
	if want := 5*time.Second + 9800*time.Millisecond; s.validUntil != want {
		t.Fatalf("valid until %v, want %v", s.validUntil, want)
	}
}

func TestHoldsFollowsTheNewestView(t *testing.T) {
	s := bareSession(5 * time.Second)
	grantedAt := 10 * time.Second
	if !s.holds("g", 0, 40, grantedAt) {
		t.Fatal("no word yet: still held")
	}
	s.acked(11*time.Second, ack(41, &pb.Held{Group: "g", Token: 40}))
	if !s.holds("g", 0, 40, grantedAt) {
		t.Fatal("held under our token")
	}
	s.acked(9*time.Second, ack(39)) // read before the grant: says nothing
	if !s.holds("g", 0, 40, grantedAt) {
		t.Fatal("an older view must not end mastership")
	}
	s.acked(12*time.Second, ack(42, &pb.Held{Group: "g", Token: 40, Revoked: true}))
	if s.holds("g", 0, 40, grantedAt) {
		t.Fatal("revoked")
	}
	s2 := bareSession(5 * time.Second)
	s2.acked(12*time.Second, ack(50))
	if s2.holds("g", 0, 40, grantedAt) {
		t.Fatal("gone in a view read after the grant")
	}
	s3 := bareSession(5 * time.Second)
	s3.acked(12*time.Second, ack(50, &pb.Held{Group: "g", Token: 45}))
	if s3.holds("g", 0, 40, grantedAt) {
		t.Fatal("re-granted under a higher token")
	}
}

func TestStatesAreFinal(t *testing.T) {
	s := bareSession(time.Second)
	if !s.setState(StateSuspended) || !s.setState(StateConnected) || !s.setState(StateLost) {
		t.Fatal("transitions refused")
	}
	if s.setState(StateConnected) || s.setState(StateClosed) {
		t.Fatal("LOST is final")
	}
	select {
	case <-s.Done():
	default:
		t.Fatal("Done not closed")
	}
	if got := s.events; len(got) != 3 || got[2] != StateLost {
		t.Fatalf("events %v", got)
	}
}

func TestFenceRejectsOlderTokens(t *testing.T) {
	var f Fence
	// The same token again is accepted (a master's every action carries it), and each
	// slot has its own highest token.
	for _, c := range []struct {
		slot  int32
		token int64
	}{{0, 5}, {0, 5}, {1, 1}} {
		if err := f.Check("g", c.slot, c.token); err != nil {
			t.Fatalf("slot %d token %d refused: %v", c.slot, c.token, err)
		}
	}
	if err := f.Check("g", 0, 4); !errors.Is(err, ErrStaleToken) {
		t.Fatalf("got %v", err)
	}
}

func TestDriftOutOfRangeIsRefused(t *testing.T) {
	c, _ := New(Config{Endpoints: []string{"127.0.0.1:1"}})
	defer func() { _ = c.Close() }()
	if _, err := c.OpenSession(t.Context(), time.Second, WithDrift(0.5)); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("got %v", err)
	}
}
