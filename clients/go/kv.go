package coord

import (
	"context"

	"google.golang.org/grpc"

	pb "github.com/coord/coord/clients/go/coordpb"
)

// WriteOption changes a Put or Delete (or a transaction's OpPut and OpDelete).
type WriteOption func(*writeOpts)

type writeOpts struct {
	expected  *int64
	prevKV    bool
	prefix    bool
	requestID string
	sessionID string
}

// WithExpectedModRevision makes the write a compare-and-set: it applies only if the key's
// mod_revision equals rev (0: only if the key does not exist). A miss is not an error:
// the response's Succeeded is false.
func WithExpectedModRevision(rev int64) WriteOption {
	return func(o *writeOpts) { o.expected = &rev }
}

// WithPrevKV asks for the previous key-value pair(s).
func WithPrevKV() WriteOption { return func(o *writeOpts) { o.prevKV = true } }

// WithPrefix makes Delete delete every key starting with the key.
func WithPrefix() WriteOption { return func(o *writeOpts) { o.prefix = true } }

// WithSession binds the key of a Put (or OpPut) to s, a session this client keeps alive:
// the cluster deletes the key in the same apply that ends the session (its expiry or
// close). The latest put decides: a put without WithSession unbinds the key. A session
// that has ended is refused (ErrNotFound), nothing written. Do not rely on the key
// outliving s's validity (docs/protocol.md, section 8). A nil s binds nothing.
func WithSession(s *Session) WriteOption {
	return func(o *writeOpts) {
		if s != nil {
			o.sessionID = s.ID()
		}
	}
}

// WithRequestID sets the write's request id (default: a fresh NewRequestID). Retries
// inside one call always reuse it; pass your own to retry a write across calls.
func WithRequestID(id string) WriteOption { return func(o *writeOpts) { o.requestID = id } }

var errDeleteSession = &Error{Reason: ReasonInvalidArgument,
	Message: "a delete takes no session: WithSession binds the key of a put"}

func writeOptions(opts []WriteOption) writeOpts {
	var o writeOpts
	for _, f := range opts {
		f(&o)
	}
	if o.requestID == "" {
		o.requestID = NewRequestID()
	}
	return o
}

// Put sets key to value on the leader, retried safely under one request id. WithSession
// binds the key to a session.
func (c *Client) Put(ctx context.Context, key, value string, opts ...WriteOption) (*pb.PutResponse, error) {
	o := writeOptions(opts)
	req := &pb.PutRequest{Key: []byte(key), Value: []byte(value), PrevKv: o.prevKV,
		ExpectedModRevision: o.expected, RequestId: o.requestID, SessionId: o.sessionID}
	var resp *pb.PutResponse
	err := c.call(ctx, true, func(ctx context.Context, cc *grpc.ClientConn, co ...grpc.CallOption) (err error) {
		resp, err = pb.NewKVClient(cc).Put(ctx, req, co...)
		return err
	})
	return resp, err
}

// Delete deletes key (or, WithPrefix, every key under it).
func (c *Client) Delete(ctx context.Context, key string, opts ...WriteOption) (*pb.DeleteResponse, error) {
	o := writeOptions(opts)
	if o.sessionID != "" {
		return nil, errDeleteSession
	}
	req := &pb.DeleteRequest{Key: []byte(key), Prefix: o.prefix, PrevKv: o.prevKV,
		ExpectedModRevision: o.expected, RequestId: o.requestID}
	var resp *pb.DeleteResponse
	err := c.call(ctx, true, func(ctx context.Context, cc *grpc.ClientConn, co ...grpc.CallOption) (err error) {
		resp, err = pb.NewKVClient(cc).Delete(ctx, req, co...)
		return err
	})
	return resp, err
}

// Range reads keys. req.Serializable reads any node's local state (maybe stale);
// otherwise the read is linearizable and goes to the leader.
func (c *Client) Range(ctx context.Context, req *pb.RangeRequest) (*pb.RangeResponse, error) {
	var resp *pb.RangeResponse
	err := c.call(ctx, !req.GetSerializable(), func(ctx context.Context, cc *grpc.ClientConn, co ...grpc.CallOption) (err error) {
		resp, err = pb.NewKVClient(cc).Range(ctx, req, co...)
		return err
	})
	return resp, err
}

// Get reads one key, linearizably; nil (and no error) when it does not exist.
func (c *Client) Get(ctx context.Context, key string) (*pb.KeyValue, error) {
	resp, err := c.Range(ctx, &pb.RangeRequest{Key: []byte(key)})
	if err != nil || len(resp.GetKvs()) == 0 {
		return nil, err
	}
	return resp.GetKvs()[0], nil
}
