package coord

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/coord/coord/clients/go/coordpb"
)

func (n *fakeNode) Txn(ctx context.Context, req *pb.TxnRequest) (*pb.TxnResponse, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.txns = append(n.txns, req)
	if err := n.write(ctx, req.GetRequestId()); err != nil {
		return nil, err
	}
	resp := &pb.TxnResponse{Succeeded: true}
	for range req.GetSuccess() {
		resp.Responses = append(resp.Responses, &pb.TxnOpResponse{
			Response: &pb.TxnOpResponse_Put{Put: &pb.PutResponse{Succeeded: true}}})
	}
	return resp, nil
}

func (n *fakeNode) Watch(req *pb.WatchRequest, stream grpc.ServerStreamingServer[pb.WatchResponse]) error {
	return n.watch(req, stream)
}

func (n *fakeNode) requests() ([]*pb.PutRequest, []*pb.TxnRequest) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*pb.PutRequest(nil), n.puts...), append([]*pb.TxnRequest(nil), n.txns...)
}

func TestTxnBuildsTheMessage(t *testing.T) {
	s := &Session{id: "s-1"}
	txn := (&Client{}).Txn(context.Background()).
		If(ModRevision("k").Eq(7), Value("owner").Ne("n1"), Version("k").Lt(3), Value("v").Gt("a"),
			Exists("e"), Absent("a")).
		Then(OpPut("k", "v", WithSession(s)), OpDelete("d/", WithPrefix())).
		Else(OpPut("k", "w"))
	got, err := txn.request("rid")
	if err != nil {
		t.Fatal(err)
	}
	put := func(k, v, sid string) *pb.TxnOp {
		return &pb.TxnOp{Op: &pb.TxnOp_Put{Put: &pb.PutRequest{Key: []byte(k), Value: []byte(v), SessionId: sid}}}
	}
	want := &pb.TxnRequest{
		RequestId: "rid",
		Compares: []*pb.Compare{
			{Key: []byte("k"), Result: pb.Compare_EQUAL, Target: &pb.Compare_ModRevision{ModRevision: 7}},
			{Key: []byte("owner"), Result: pb.Compare_NOT_EQUAL, Target: &pb.Compare_Value{Value: []byte("n1")}},
			{Key: []byte("k"), Result: pb.Compare_LESS, Target: &pb.Compare_Version{Version: 3}},
			{Key: []byte("v"), Result: pb.Compare_GREATER, Target: &pb.Compare_Value{Value: []byte("a")}},
			{Key: []byte("e"), Result: pb.Compare_EQUAL, Target: &pb.Compare_Exists{Exists: true}},
			{Key: []byte("a"), Result: pb.Compare_EQUAL, Target: &pb.Compare_Exists{Exists: false}},
		},
		Success: []*pb.TxnOp{put("k", "v", "s-1"),
			{Op: &pb.TxnOp_Delete{Delete: &pb.DeleteRequest{Key: []byte("d/"), Prefix: true}}}},
		Failure: []*pb.TxnOp{put("k", "w", "")},
	}
	if !proto.Equal(got, want) {
		t.Fatalf("got  %v\nwant %v", got, want)
	}
	// Absent must be sent with its target set (exists=false), not as a compare without one.
	if _, ok := got.GetCompares()[5].GetTarget().(*pb.Compare_Exists); !ok {
		t.Fatalf("absent has no target: %v", got.GetCompares()[5])
	}
}

func TestTxnRefusesOptionsThatDoNotFitWithoutSending(t *testing.T) {
	n := startNode(t)
	n.leader = n.addr
	c := newClient(t, n.addr)
	for name, txn := range map[string]*Txn{
		"delete with a session": c.Txn(ctxT(t)).Then(OpDelete("d", WithSession(&Session{id: "s"}))),
		"op with a request id":  c.Txn(ctxT(t)).Else(OpPut("k", "v", WithRequestID("x"))),
		"op with a CAS":         c.Txn(ctxT(t)).Then(OpPut("k", "v", WithExpectedModRevision(1))),
		"put with a prefix":     c.Txn(ctxT(t)).Then(OpPut("k", "v", WithPrefix())),
		"txn with a prefix":     c.Txn(ctxT(t), WithPrefix()),
		"zero Op":               c.Txn(ctxT(t)).Then(Op{}),
		"zero Cmp":              c.Txn(ctxT(t)).If(Cmp{}),
	} {
		if _, err := txn.Commit(); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: want invalid_argument, got %v", name, err)
		}
	}
	if _, err := c.Delete(ctxT(t), "d", WithSession(&Session{id: "s"})); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("Delete with a session: want invalid_argument, got %v", err)
	}
	if ids := n.requestIDs(); len(ids) != 0 {
		t.Fatalf("nothing may be sent: %v", ids)
	}
}

func TestTxnRetrySendsTheSameRequestID(t *testing.T) {
	n := startNode(t)
	n.leader = n.addr
	n.failNext(codes.Unavailable, ReasonOutcomeUnknown, "")
	n.failNext(codes.DeadlineExceeded, ReasonDeadlineExceeded, "")
	c := newClient(t, n.addr)
	resp, err := c.Txn(ctxT(t)).If(Absent("k")).Then(OpPut("k", "v")).Commit()
	if err != nil || !resp.GetSucceeded() || len(resp.GetResponses()) != 1 || !resp.GetResponses()[0].GetPut().GetSucceeded() {
		t.Fatalf("txn: %v %v", resp, err)
	}
	ids := n.requestIDs()
	if len(ids) != 3 || ids[0] == "" || ids[0] != ids[1] || ids[1] != ids[2] {
		t.Fatalf("want one request id on 3 attempts, got %q", ids)
	}
	_, txns := n.requests()
	if !proto.Equal(txns[0], txns[2]) {
		t.Fatalf("a retry must send the same transaction: %v vs %v", txns[0], txns[2])
	}
	if _, err := c.Txn(ctxT(t)).Then(OpPut("k", "v")).Commit(); err != nil || n.requestIDs()[3] == ids[0] {
		t.Fatalf("a new transaction needs a new id: %v %q", err, n.requestIDs())
	}
	if _, err := c.Txn(ctxT(t), WithRequestID("mine")).Commit(); err != nil || n.requestIDs()[4] != "mine" {
		t.Fatalf("WithRequestID: %v %q", err, n.requestIDs())
	}
}

func TestTxnNotLeaderRedirectsWithTheSameID(t *testing.T) {
	follower, leader := startNode(t), startNode(t)
	follower.leader = follower.addr
	follower.failNext(codes.FailedPrecondition, ReasonNotLeader, leader.addr)
	if _, err := newClient(t, follower.addr).Txn(ctxT(t)).Then(OpDelete("k")).Commit(); err != nil {
		t.Fatal(err)
	}
	if got := leader.requestIDs(); len(got) != 1 || got[0] != follower.requestIDs()[0] {
		t.Fatalf("the retry at the hinted leader must carry the same id: %v %v", got, follower.requestIDs())
	}
}

func TestPutWithSessionBindsTheKey(t *testing.T) {
	n := startNode(t)
	n.leader = n.addr
	n.failNext(codes.Unavailable, ReasonUnavailable, "")
	c := newClient(t, n.addr)
	if _, err := c.Put(ctxT(t), "k", "v", WithSession(&Session{id: "s-9"})); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctxT(t), "k", "v", WithSession(nil)); err != nil {
		t.Fatal(err)
	}
	puts, _ := n.requests()
	if len(puts) != 3 || puts[0].GetSessionId() != "s-9" || puts[1].GetSessionId() != "s-9" ||
		puts[0].GetRequestId() != puts[1].GetRequestId() || puts[2].GetSessionId() != "" {
		t.Fatalf("puts %v", puts)
	}
}

func TestWatchKeyPrefixSurvivesResume(t *testing.T) {
	n := startNode(t)
	n.leader = n.addr
	var (
		reqs   []*pb.WatchRequest
		failed bool
	)
	n.watch = func(req *pb.WatchRequest, stream grpc.ServerStreamingServer[pb.WatchResponse]) error {
		n.mu.Lock()
		reqs = append(reqs, req)
		first := !failed
		failed = true
		n.mu.Unlock()
		ev := &pb.Event{Revision: req.GetFromRevision(), Type: "kv_put"}
		if err := stream.Send(&pb.WatchResponse{Header: &pb.ResponseHeader{Revision: ev.Revision}, Events: []*pb.Event{ev}}); err != nil {
			return err
		}
		if first { // the stream breaks after one event: the client resumes after it
			return status.Error(codes.Unavailable, "stream broken")
		}
		<-stream.Context().Done()
		return nil
	}
	var revs []int64
	for ev, err := range newClient(t, n.addr).Watch(ctxT(t), 5, WatchOptions{KeyPrefix: "p/"}) {
		if err != nil {
			t.Fatal(err)
		}
		if revs = append(revs, ev.GetRevision()); len(revs) == 2 {
			break
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(revs) != 2 || revs[0] != 5 || revs[1] != 6 || len(reqs) != 2 {
		t.Fatalf("revisions %v, requests %v", revs, reqs)
	}
	for i, r := range reqs {
		if string(r.GetKeyPrefix()) != "p/" || r.GetFromRevision() != int64(5+i) {
			t.Errorf("request %d: %v", i, r)
		}
	}
	if r := watchRequest(1, WatchOptions{}); r.KeyPrefix != nil {
		t.Errorf("no prefix: %v", r)
	}
}
