package coord

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/coord/coord/clients/go/coordpb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeNode is one node of a fake cluster: a KV, Cluster and Watch service on 127.0.0.1.
type fakeNode struct {
	pb.UnimplementedKVServer
	pb.UnimplementedClusterServer
	pb.UnimplementedWatchServer
	addr   string
	srv    *grpc.Server
	mu     sync.Mutex
	ids    []string
	leader string           // GetLeader's answer
	fail   []*status.Status // the next writes (Put, Txn) fail with these
	trail  []metadata.MD
	puts   []*pb.PutRequest
	txns   []*pb.TxnRequest
	watch  func(*pb.WatchRequest, grpc.ServerStreamingServer[pb.WatchResponse]) error
}

func startNode(t *testing.T) *fakeNode {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &fakeNode{addr: lis.Addr().String(), srv: grpc.NewServer()}
	pb.RegisterKVServer(n.srv, n)
	pb.RegisterClusterServer(n.srv, n)
	pb.RegisterWatchServer(n.srv, n)
	done := make(chan struct{})
	go func() { defer close(done); _ = n.srv.Serve(lis) }()
	t.Cleanup(func() { n.srv.Stop(); <-done })
	return n
}

// write records a write's request id and fails it if a failure is queued; n.mu held.
func (n *fakeNode) write(ctx context.Context, id string) error {
	n.ids = append(n.ids, id)
	if len(n.fail) > 0 {
		st, md := n.fail[0], n.trail[0]
		n.fail, n.trail = n.fail[1:], n.trail[1:]
		_ = grpc.SetTrailer(ctx, md)
		return st.Err()
	}
	return nil
}

func (n *fakeNode) Put(ctx context.Context, req *pb.PutRequest) (*pb.PutResponse, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.puts = append(n.puts, req)
	if err := n.write(ctx, req.GetRequestId()); err != nil {
		return nil, err
	}
	return &pb.PutResponse{Succeeded: true, Kv: &pb.KeyValue{Key: req.GetKey(), Value: req.GetValue(), ModRevision: 7}}, nil
}

func (n *fakeNode) GetLeader(context.Context, *pb.GetLeaderRequest) (*pb.GetLeaderResponse, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return &pb.GetLeaderResponse{LeaderId: "n1", LeaderApiAddress: n.leader}, nil
}

func (n *fakeNode) failNext(code codes.Code, reason, leader string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	md := metadata.Pairs("coord-error", reason)
	if leader != "" {
		md.Append("coord-leader", leader)
		md.Append("coord-leader-id", "n1")
	}
	n.fail = append(n.fail, status.New(code, "coord: "+reason))
	n.trail = append(n.trail, md)
}

func (n *fakeNode) requestIDs() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.ids...)
}

func newClient(t *testing.T, eps ...string) *Client {
	t.Helper()
	c, err := New(Config{Endpoints: eps, AttemptTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestParseEndpointsRefusesMissingPorts(t *testing.T) {
	eps, err := ParseEndpoints(" 127.0.0.1:2379, h:2381 ")
	if err != nil || len(eps) != 2 || eps[0] != "127.0.0.1:2379" {
		t.Fatalf("got %v, %v", eps, err)
	}
	for _, bad := range []string{"", "host", "host:", "host:0", "host:x", "[::1]"} {
		if _, err := ParseEndpoints(bad); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%q: want invalid_argument, got %v", bad, err)
		}
	}
}

func TestRetrySendsTheSameRequestID(t *testing.T) {
	n := startNode(t)
	n.leader = n.addr
	n.failNext(codes.Unavailable, ReasonOutcomeUnknown, "")
	n.failNext(codes.DeadlineExceeded, ReasonDeadlineExceeded, "")
	resp, err := newClient(t, n.addr).Put(ctxT(t), "k", "v")
	if err != nil || !resp.GetSucceeded() {
		t.Fatalf("put: %v %v", resp, err)
	}
	ids := n.requestIDs()
	if len(ids) != 3 || ids[0] == "" || ids[0] != ids[1] || ids[1] != ids[2] {
		t.Fatalf("want one request id on 3 attempts, got %q", ids)
	}
	if _, err := newClient(t, n.addr).Put(ctxT(t), "k", "v"); err != nil || n.requestIDs()[3] == ids[0] {
		t.Fatalf("a new write needs a new id: %v %q", err, n.requestIDs())
	}
}

func TestNotRetryableErrorsAreTypedWithTheirTrailers(t *testing.T) {
	n := startNode(t)
	n.leader = n.addr
	n.failNext(codes.InvalidArgument, ReasonInvalidArgument, "10.9.9.9:1")
	_, err := newClient(t, n.addr).Put(ctxT(t), "k", "v")
	var ce *Error
	if !errors.As(err, &ce) || !errors.Is(err, ErrInvalidArgument) || ce.Retryable() ||
		ce.LeaderAddress != "10.9.9.9:1" || ce.LeaderID != "n1" || ce.Code != codes.InvalidArgument {
		t.Fatalf("got %#v", err)
	}
	if len(n.requestIDs()) != 1 {
		t.Fatalf("not retried: %v", n.requestIDs())
	}
}

func TestNotLeaderRedirectsToTheHint(t *testing.T) {
	follower, leader := startNode(t), startNode(t)
	follower.leader = follower.addr // it wrongly believes it leads: only the hint helps
	follower.failNext(codes.FailedPrecondition, ReasonNotLeader, leader.addr)
	c := newClient(t, follower.addr)
	if _, err := c.Put(ctxT(t), "k", "v"); err != nil {
		t.Fatal(err)
	}
	if got := leader.requestIDs(); len(got) != 1 || got[0] != follower.requestIDs()[0] {
		t.Fatalf("the retry at the hinted leader must carry the same id: %v %v", got, follower.requestIDs())
	}
}

func TestFindLeaderSkipsDeadEndpoints(t *testing.T) {
	n := startNode(t)
	n.leader = "127.0.0.1:1"
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := lis.Addr().String()
	_ = lis.Close()
	c := newClient(t, dead, n.addr)
	addr, err := c.FindLeader(ctxT(t), "")
	if err != nil || addr != "127.0.0.1:1" {
		t.Fatalf("got %q %v", addr, err)
	}
	if addr, _ := c.FindLeader(ctxT(t), "127.0.0.1:1"); addr != "" {
		t.Fatalf("a skipped leader is no answer: %q", addr)
	}
}

func TestCallStopsAtTheContextDeadline(t *testing.T) {
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := lis.Addr().String()
	_ = lis.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := newClient(t, dead).Put(ctx, "k", "v")
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("want the deadline and the last error, got %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v", d)
	}
}
