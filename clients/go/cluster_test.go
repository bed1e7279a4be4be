package coord

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	pb "github.com/coord/coord/clients/go/coordpb"
)

// clusterClient connects to the cluster named by COORD_ENDPOINTS (tests/integration/
// test_go_client.py starts one); without it the test is skipped.
func clusterClient(t *testing.T) *Client {
	t.Helper()
	raw := os.Getenv("COORD_ENDPOINTS")
	if raw == "" {
		t.Skip("COORD_ENDPOINTS is unset: no cluster to talk to")
	}
	eps, err := ParseEndpoints(raw)
	if err != nil {
		t.Fatal(err)
	}
	return newClient(t, eps...)
}

func longCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestClusterKV(t *testing.T) {
	c := clusterClient(t)
	ctx := longCtx(t)
	key := "go-test/" + NewRequestID()
	put, err := c.Put(ctx, key, "1")
	if err != nil || !put.GetSucceeded() {
		t.Fatalf("put: %v %v", put, err)
	}
	kv, err := c.Get(ctx, key)
	if err != nil || string(kv.GetValue()) != "1" {
		t.Fatalf("get: %v %v", kv, err)
	}
	miss, err := c.Put(ctx, key, "2", WithExpectedModRevision(kv.GetModRevision()-1))
	if err != nil || miss.GetSucceeded() {
		t.Fatalf("a compare-and-set miss is an answer, not an error: %v %v", miss, err)
	}
	// The same request id with other content is refused.
	id := NewRequestID()
	if _, err := c.Put(ctx, key, "3", WithRequestID(id)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, key, "4", WithRequestID(id)); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("a reused id with other content: want invalid_argument, got %v", err)
	}
	if _, err := c.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if kv, err := c.Get(ctx, key); err != nil || kv != nil {
		t.Fatalf("deleted: %v %v", kv, err)
	}
}

func TestClusterCampaignResignAndWatchResume(t *testing.T) {
	c := clusterClient(t)
	ctx := longCtx(t)
	group := "go-" + NewRequestID()[:8]
	if _, err := c.CreateGroup(ctx, group, &pb.GroupPolicy{Slots: 1}); err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	from := st.GetRevision() + 1

	var states []SessionState
	statesDone := make(chan struct{})
	s, err := c.OpenSession(ctx, 3*time.Second, WithSessionName("go-test"),
		WithStateCallback(func(_ *Session, st SessionState) {
			states = append(states, st) // one goroutine calls it
			if st == StateClosed {
				close(statesDone)
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.Register(ctx, group, "go-1", WithAddress("127.0.0.1:1"), WithPriority(5))
	if err != nil {
		t.Fatal(err)
	}
	lead, err := m.Campaign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !lead.IsMaster() || lead.Token() <= 0 {
		t.Fatalf("elected: master=%v token=%d", lead.IsMaster(), lead.Token())
	}
	masters, err := c.Masters(ctx, group)
	if err != nil || len(masters) != 1 || masters[0].GetToken() != lead.Token() {
		t.Fatalf("masters: %v %v", masters, err)
	}
	// Keepalives keep it valid past its TTL.
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		if !lead.IsMaster() {
			t.Fatalf("lost mastership while kept alive (state %v)", s.State())
		}
		time.Sleep(50 * time.Millisecond) // polling IsMaster, as a master's loop does
	}
	if err := lead.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if lead.IsMaster() {
		t.Fatal("master after resign")
	}
	second, err := m.Campaign(ctx)
	if err != nil || second.Token() <= lead.Token() {
		t.Fatalf("re-elected: %v, token %d after %d", err, second.Token(), lead.Token())
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	<-statesDone
	if states[len(states)-1] != StateClosed || second.IsMaster() {
		t.Fatalf("states %v, master %v", states, second.IsMaster())
	}

	// Watch from the revision before the group's first grant: the events come in order,
	// and resuming after the first elected event replays nothing twice.
	var elected []int64
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for ev, err := range c.Watch(wctx, from, WatchOptions{Groups: []string{group}}) {
		if err != nil {
			t.Fatalf("watch: %v (elected so far %v)", err, elected)
		}
		if ev.GetType() == "master_elected" {
			elected = append(elected, ev.GetToken())
			from = ev.GetRevision() + 1
			break
		}
	}
	for ev, err := range c.Watch(wctx, from, WatchOptions{Groups: []string{group}}) {
		if err != nil {
			t.Fatalf("watch resume: %v", err)
		}
		if ev.GetRevision() < from {
			t.Fatalf("replayed revision %d, resumed from %d", ev.GetRevision(), from)
		}
		if ev.GetType() == "master_elected" {
			elected = append(elected, ev.GetToken())
			break
		}
	}
	if len(elected) != 2 || elected[0] != lead.Token() || elected[1] != second.Token() {
		t.Fatalf("elected tokens %v, want [%d %d]", elected, lead.Token(), second.Token())
	}
}

func TestClusterOutOfRangeAndObserve(t *testing.T) {
	c := clusterClient(t)
	ctx := longCtx(t)
	group := "go-obs-" + NewRequestID()[:8]
	if _, err := c.CreateGroup(ctx, group, &pb.GroupPolicy{Slots: 1}); err != nil {
		t.Fatal(err)
	}
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for masters, err := range c.Observe(octx, group) {
		if err != nil || len(masters) != 0 {
			t.Fatalf("observe: %v %v", masters, err)
		}
		break // the first view: nobody holds it
	}
}

func TestClusterTxnRetryAnswersTheFirstResult(t *testing.T) {
	c := clusterClient(t)
	ctx := longCtx(t)
	key := "go-txn/" + NewRequestID()
	id := NewRequestID()
	txn := func() *Txn {
		return c.Txn(ctx, WithRequestID(id)).If(Absent(key)).Then(OpPut(key, "1")).Else(OpPut(key, "2"))
	}
	first, err := txn().Commit()
	if err != nil || !first.GetSucceeded() {
		t.Fatalf("txn: %v %v", first, err)
	}
	// The key exists now, but a retry under the same id is answered with the first result.
	again, err := txn().Commit()
	if err != nil || !again.GetSucceeded() ||
		again.GetResponses()[0].GetPut().GetKv().GetModRevision() != first.GetResponses()[0].GetPut().GetKv().GetModRevision() {
		t.Fatalf("retry: %v %v (first %v)", again, err, first)
	}
	// On a missing key every value compare is false, NOT_EQUAL too.
	resp, err := c.Txn(ctx).If(Value(key + "/missing").Ne("x")).Then(OpPut(key, "ne")).Commit()
	if err != nil || resp.GetSucceeded() {
		t.Fatalf("value compare on a missing key: %v %v", resp, err)
	}
	if kv, err := c.Get(ctx, key); err != nil || string(kv.GetValue()) != "1" {
		t.Fatalf("get: %v %v", kv, err)
	}
	if _, err := c.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
}
