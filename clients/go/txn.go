package coord

import (
	"context"
	"fmt"

	"google.golang.org/grpc"

	pb "github.com/coord/coord/clients/go/coordpb"
)

// Cmp is one condition of a transaction, on one key: build it with Value, ModRevision,
// Version, Exists or Absent. On a missing key ModRevision and Version are 0 and every
// Value compare is false (Ne too): compare Absent for absence (docs/protocol.md, 8).
type Cmp struct{ c *pb.Compare }

// Proto returns the wire message.
func (c Cmp) Proto() *pb.Compare { return c.c }

// ValueTarget is a key's value, compared as bytes (lexicographically).
type ValueTarget struct{ key string }

// Value is the key's value; every compare of it is false on a missing key.
func Value(key string) ValueTarget { return ValueTarget{key} }

func (t ValueTarget) cmp(r pb.Compare_Result, v string) Cmp {
	return Cmp{&pb.Compare{Key: []byte(t.key), Result: r, Target: &pb.Compare_Value{Value: []byte(v)}}}
}

// Eq holds when the key's value is v; Ne, Lt, Gt when it differs, sorts before, after.
func (t ValueTarget) Eq(v string) Cmp { return t.cmp(pb.Compare_EQUAL, v) }
func (t ValueTarget) Ne(v string) Cmp { return t.cmp(pb.Compare_NOT_EQUAL, v) }
func (t ValueTarget) Lt(v string) Cmp { return t.cmp(pb.Compare_LESS, v) }
func (t ValueTarget) Gt(v string) Cmp { return t.cmp(pb.Compare_GREATER, v) }

// RevisionTarget is a key's mod_revision or version (0 on a missing key).
type RevisionTarget struct {
	key     string
	version bool
}

// ModRevision is the revision of the key's last change (0: missing).
func ModRevision(key string) RevisionTarget { return RevisionTarget{key: key} }

// Version is the number of puts since the key was created (0: missing).
func Version(key string) RevisionTarget { return RevisionTarget{key: key, version: true} }

func (t RevisionTarget) cmp(r pb.Compare_Result, n int64) Cmp {
	c := &pb.Compare{Key: []byte(t.key), Result: r}
	if t.version {
		c.Target = &pb.Compare_Version{Version: n}
	} else {
		c.Target = &pb.Compare_ModRevision{ModRevision: n}
	}
	return Cmp{c}
}

// Eq holds when the key's target is n; Ne, Lt, Gt when it differs, is less, greater.
func (t RevisionTarget) Eq(n int64) Cmp { return t.cmp(pb.Compare_EQUAL, n) }
func (t RevisionTarget) Ne(n int64) Cmp { return t.cmp(pb.Compare_NOT_EQUAL, n) }
func (t RevisionTarget) Lt(n int64) Cmp { return t.cmp(pb.Compare_LESS, n) }
func (t RevisionTarget) Gt(n int64) Cmp { return t.cmp(pb.Compare_GREATER, n) }

// Exists holds when the key exists.
func Exists(key string) Cmp {
	return Cmp{&pb.Compare{Key: []byte(key), Result: pb.Compare_EQUAL, Target: &pb.Compare_Exists{Exists: true}}}
}

// Absent holds when the key does not exist.
func Absent(key string) Cmp {
	return Cmp{&pb.Compare{Key: []byte(key), Result: pb.Compare_EQUAL, Target: &pb.Compare_Exists{Exists: false}}}
}

// Op is one operation of a transaction's branch: OpPut or OpDelete.
type Op struct {
	op  *pb.TxnOp
	err string // why the options given do not fit a transaction's operation
}

// Proto returns the wire message.
func (o Op) Proto() *pb.TxnOp { return o.op }

// OpPut puts key; WithSession binds it to a session. A transaction's operations take no
// WithRequestID, WithExpectedModRevision or WithPrevKV (the compares are their
// conditions): Commit refuses them (ErrInvalidArgument).
func OpPut(key, value string, opts ...WriteOption) Op {
	var o writeOpts
	for _, f := range opts {
		f(&o)
	}
	op := Op{op: &pb.TxnOp{Op: &pb.TxnOp_Put{Put: &pb.PutRequest{
		Key: []byte(key), Value: []byte(value), SessionId: o.sessionID}}}}
	if o.prefix {
		op.err = "a put takes no WithPrefix"
	}
	op.refuse(o)
	return op
}

// OpDelete deletes key (WithPrefix: every key starting with it).
func OpDelete(key string, opts ...WriteOption) Op {
	var o writeOpts
	for _, f := range opts {
		f(&o)
	}
	op := Op{op: &pb.TxnOp{Op: &pb.TxnOp_Delete{Delete: &pb.DeleteRequest{Key: []byte(key), Prefix: o.prefix}}}}
	if o.sessionID != "" {
		op.err = "a delete takes no WithSession"
	}
	op.refuse(o)
	return op
}

func (op *Op) refuse(o writeOpts) {
	if o.requestID != "" || o.expected != nil || o.prevKV {
		op.err = "a transaction's operation takes no WithRequestID, WithExpectedModRevision or WithPrevKV"
	}
}

// Txn is a transaction being built, etcd clientv3 style:
//
//	resp, err := c.Txn(ctx).
//		If(coord.ModRevision("shards/map").Eq(rev), coord.Value("shards/owner").Eq("node-1")).
//		Then(coord.OpPut("shards/map", newMap), coord.OpPut("shards/owner", "node-2")).
//		Else(coord.OpDelete("shards/claim")).
//		Commit()
//	resp.GetSucceeded()   // every compare held: the Then branch was applied
//
// If, Then and Else append; Commit sends it. Not safe for concurrent use.
type Txn struct {
	c         *Client
	ctx       context.Context
	requestID string
	err       string
	cmps      []Cmp
	then, els []Op
}

// Txn starts a transaction bounded by ctx (its deadline bounds Commit, retries included).
// The only option it takes is WithRequestID, to retry one transaction across Commits.
func (c *Client) Txn(ctx context.Context, opts ...WriteOption) *Txn {
	var o writeOpts
	for _, f := range opts {
		f(&o)
	}
	t := &Txn{c: c, ctx: ctx, requestID: o.requestID}
	if o.expected != nil || o.prevKV || o.prefix || o.sessionID != "" {
		t.err = "a transaction takes WithRequestID only (its compares are its conditions; its operations take their own options)"
	}
	return t
}

// If adds compares: the Then branch runs when every one holds, else the Else branch.
func (t *Txn) If(cs ...Cmp) *Txn { t.cmps = append(t.cmps, cs...); return t }

// Then adds operations applied when every compare holds.
func (t *Txn) Then(ops ...Op) *Txn { t.then = append(t.then, ops...); return t }

// Else adds operations applied when a compare does not hold.
func (t *Txn) Else(ops ...Op) *Txn { t.els = append(t.els, ops...); return t }

// request builds the wire message under requestID, or refuses the options given.
func (t *Txn) request(requestID string) (*pb.TxnRequest, error) {
	if t.err != "" {
		return nil, &Error{Reason: ReasonInvalidArgument, Message: t.err}
	}
	req := &pb.TxnRequest{RequestId: requestID}
	for _, c := range t.cmps {
		if c.c == nil {
			return nil, &Error{Reason: ReasonInvalidArgument, Message: fmt.Sprintf(
				"compares[%d]: an empty Cmp: build it with Value, ModRevision, Version, Exists or Absent", len(req.Compares))}
		}
		req.Compares = append(req.Compares, c.c)
	}
	for _, branch := range []struct {
		name string
		ops  []Op
		out  *[]*pb.TxnOp
	}{{"success", t.then, &req.Success}, {"failure", t.els, &req.Failure}} {
		for i, op := range branch.ops {
			if op.op == nil {
				op.err = "an empty Op: build it with OpPut or OpDelete"
			}
			if op.err != "" {
				return nil, &Error{Reason: ReasonInvalidArgument, Message: fmt.Sprintf("%s[%d]: %s", branch.name, i, op.err)}
			}
			*branch.out = append(*branch.out, op.op)
		}
	}
	return req, nil
}

// Commit sends the transaction to the leader, retried safely: one request id (a fresh
// NewRequestID per Commit, or WithRequestID's) on every attempt, so it is applied once
// and a retry is answered with the first result, including which branch ran. Succeeded
// says which branch ran; Responses has one answer per operation of it, in order. A
// malformed or oversized transaction is ErrInvalidArgument, nothing applied.
func (t *Txn) Commit() (*pb.TxnResponse, error) {
	id := t.requestID
	if id == "" {
		id = NewRequestID()
	}
	req, err := t.request(id)
	if err != nil {
		return nil, err
	}
	var resp *pb.TxnResponse
	err = t.c.call(t.ctx, true, func(ctx context.Context, cc *grpc.ClientConn, co ...grpc.CallOption) (err error) {
		resp, err = pb.NewKVClient(cc).Txn(ctx, req, co...)
		return err
	})
	return resp, err
}
