package coord

import (
	"context"
	"errors"
	"iter"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	pb "github.com/coord/coord/clients/go/coordpb"
)

var errStopped = errors.New("consumer stopped")

// resume runs a stream on the leader (or any node) again after retryable failures and
// silences of more than 3 s (servers send at least once a second), until run returns nil
// or errStopped, ctx ends, or an error that is not retryable.
func (c *Client) resume(ctx context.Context, run func(ctx context.Context, cc *grpc.ClientConn, ep string, alive func()) error) error {
	for {
		ep, cc, err := c.leaderConn(ctx)
		if err == nil {
			sctx, cancel := context.WithCancel(ctx)
			guard := time.AfterFunc(streamSilence, cancel)
			err = run(sctx, cc, ep, func() { guard.Reset(streamSilence) })
			guard.Stop()
			cancel()
			if err == nil || errors.Is(err, errStopped) {
				return err
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !retryable(err) {
			return err
		}
		if ep != "" {
			c.learn(err, ep)
		}
		sleep(ctx, 20*time.Millisecond)
	}
}

// WatchOptions filter a watch.
type WatchOptions struct {
	Groups []string // only these groups (empty: all)
	Types  []string // only these event types (empty: all)
	// KeyPrefix, when set: only key-value events (kv_put, kv_delete, kv_txn) touching a
	// key that starts with it, each trimmed to those keys. All filters must match.
	KeyPrefix string
}

// Watch yields events from revision from (0: from the next change), gap-free and in
// order, resuming on another node after failures. It ends with an error (yielded once)
// when ctx ends or on an error that is not retryable: ErrOutOfRange when the events
// needed were compacted (re-read the state, watch from its revision + 1).
func (c *Client) Watch(ctx context.Context, from int64, opts WatchOptions) iter.Seq2[*pb.Event, error] {
	return func(yield func(*pb.Event, error) bool) {
		if from == 0 { // pinned now, so that a resume continues exactly here
			st, err := c.Status(ctx)
			if err != nil {
				yield(nil, err)
				return
			}
			from = st.GetRevision() + 1
		}
		err := c.resume(ctx, func(ctx context.Context, cc *grpc.ClientConn, ep string, alive func()) error {
			req := watchRequest(from, opts)
			stream, err := pb.NewWatchClient(cc).Watch(ctx, req)
			if err != nil {
				return translate(err, nil, ep)
			}
			for {
				resp, err := stream.Recv()
				if err != nil {
					return translate(err, stream.Trailer(), ep)
				}
				alive()
				for _, ev := range resp.GetEvents() {
					from = ev.GetRevision() + 1
					if !yield(ev, nil) {
						return errStopped
					}
				}
				// The server filtered every event up to the header's revision.
				from = max(from, resp.GetHeader().GetRevision()+1)
			}
		})
		if err != nil && !errors.Is(err, errStopped) {
			yield(nil, err)
		}
	}
}

func watchRequest(from int64, opts WatchOptions) *pb.WatchRequest {
	req := &pb.WatchRequest{FromRevision: from, Groups: opts.Groups, Types: opts.Types}
	if opts.KeyPrefix != "" {
		req.KeyPrefix = []byte(opts.KeyPrefix)
	}
	return req
}

// Observe yields a group's masters now, then after every change (repeated views, the
// server's heartbeat, are dropped), reconnecting after failures. It ends as Watch does.
func (c *Client) Observe(ctx context.Context, group string) iter.Seq2[[]*pb.Holding, error] {
	return func(yield func([]*pb.Holding, error) bool) {
		var seen []*pb.Holding
		same := func(a, b []*pb.Holding) bool {
			return seen != nil && slices.EqualFunc(a, b, func(x, y *pb.Holding) bool { return proto.Equal(x, y) })
		}
		err := c.resume(ctx, func(ctx context.Context, cc *grpc.ClientConn, ep string, alive func()) error {
			stream, err := pb.NewGroupsClient(cc).Observe(ctx, &pb.MastersRequest{Group: group})
			if err != nil {
				return translate(err, nil, ep)
			}
			for {
				resp, err := stream.Recv()
				if err != nil {
					return translate(err, stream.Trailer(), ep)
				}
				alive()
				if same(resp.GetMasters(), seen) {
					continue
				}
				seen = resp.GetMasters()
				if seen == nil {
					seen = []*pb.Holding{}
				}
				if !yield(seen, nil) {
					return errStopped
				}
			}
		})
		if err != nil && !errors.Is(err, errStopped) {
			yield(nil, err)
		}
	}
}

// Fence is what a protected resource keeps: it accepts a token only if it is at least
// the highest it has accepted for that group and slot. The zero value is ready to use;
// safe for concurrent use.
type Fence struct {
	mu      sync.Mutex
	highest map[slotKey]int64
}

// Check records token, or returns ErrStaleToken when a newer master has been seen.
func (f *Fence) Check(group string, slot int32, token int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := slotKey{group, slot}
	if token < f.highest[k] {
		return &Error{Reason: ReasonStaleToken, Message: "a fencing token older than one already accepted: a newer master exists"}
	}
	if f.highest == nil {
		f.highest = map[slotKey]int64{}
	}
	f.highest[k] = token
	return nil
}
