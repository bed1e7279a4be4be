package coord

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	pb "github.com/coord/coord/clients/go/coordpb"
)

// SessionState is a session's state (docs/protocol.md, section 4).
type SessionState int

// The states; Lost and Closed are final.
const (
	StateNew       SessionState = iota // not opened: no callback reports it
	StateConnected                     // the newest keepalive was acknowledged recently
	StateSuspended                     // no acknowledgement for TTL/2: still valid, reconnecting
	StateLost                          // validity ended, or the cluster expired it: stop acting
	StateClosed                        // closed by Close
)

func (s SessionState) String() string {
	return [...]string{"new", "connected", "suspended", "lost", "closed"}[s]
}

// SessionOption configures OpenSession.
type SessionOption func(*Session)

// WithSessionName labels the session for humans (host, process).
func WithSessionName(name string) SessionOption { return func(s *Session) { s.name = name } }

// WithDrift sets the clock rate drift allowance, in [0, 0.5) (default 0.02).
func WithDrift(d float64) SessionOption { return func(s *Session) { s.drift = d } }

// WithStateCallback adds fn, called once per state transition, in order, on one
// goroutine of the session's. fn must not call Close.
func WithStateCallback(fn func(*Session, SessionState)) SessionOption {
	return func(s *Session) { s.callbacks = append(s.callbacks, fn) }
}

type slotKey struct {
	group string
	slot  int32
}

type heldSlot struct {
	token   int64
	revoked bool
}

type keepAliveStream struct {
	cancel   context.CancelFunc
	openedAt time.Duration
	stalled  atomic.Bool // cancelled by the watchdog: that leader hangs
}

// Session is a TTL lease kept alive in the background, with a local validity clock: it
// is valid until the send time of the newest acknowledged keepalive + TTL × (1 − drift),
// on CLOCK_BOOTTIME. Safe for concurrent use.
type Session struct {
	c         *Client
	id        string
	name      string
	ttl       time.Duration
	drift     float64
	callbacks []func(*Session, SessionState)

	ctx    context.Context // ends when the session is lost or closed
	cancel context.CancelFunc
	wg     sync.WaitGroup
	done   chan struct{}

	mu          sync.Mutex
	state       SessionState
	validUntil  time.Duration
	lastAck     time.Duration
	held        map[slotKey]heldSlot
	heldRev     int64
	heldAsOf    time.Duration
	stream      *keepAliveStream
	stalled     string
	leaderships map[*Leadership]struct{}
	events      []SessionState
	wake        chan struct{}
	closeSent   bool
}

// OpenSession opens a session with this TTL and keeps it alive until Close (or until it
// is lost). The cluster may grant another TTL: TTL() says which.
func (c *Client) OpenSession(ctx context.Context, ttl time.Duration, opts ...SessionOption) (*Session, error) {
	s := &Session{c: c, ttl: ttl, drift: 0.02, done: make(chan struct{}), wake: make(chan struct{}, 1),
		held: map[slotKey]heldSlot{}, leaderships: map[*Leadership]struct{}{}}
	for _, o := range opts {
		o(s)
	}
	if s.drift < 0 || s.drift >= 0.5 {
		return nil, &Error{Reason: ReasonInvalidArgument, Message: "drift must be in [0, 0.5)"}
	}
	// One request id for every attempt: a retry gets the session the first one opened.
	req := &pb.OpenSessionRequest{TtlMs: ttl.Milliseconds(), Name: s.name, RequestId: NewRequestID()}
	sent := now()
	var resp *pb.OpenSessionResponse
	err := c.call(ctx, true, func(ctx context.Context, cc *grpc.ClientConn, o ...grpc.CallOption) (err error) {
		resp, err = pb.NewSessionsClient(cc).Open(ctx, req, o...)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.id = resp.GetSession().GetId()
	s.ttl = time.Duration(resp.GetSession().GetTtlMs()) * time.Millisecond
	s.validUntil = sent + s.validity()
	s.lastAck = sent
	s.state = StateConnected // the first state: no callback
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(3)
	go s.runCallbacks()
	go s.keepAlive()
	go s.watchValidity()
	return s, nil
}

func (s *Session) validity() time.Duration {
	return time.Duration(float64(s.ttl) * (1 - s.drift))
}

// ID is the session's id; TTL the TTL the cluster granted.
func (s *Session) ID() string         { return s.id }
func (s *Session) TTL() time.Duration { return s.ttl }

// State returns the current state.
func (s *Session) State() SessionState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// Done is closed when the session is lost or closed.
func (s *Session) Done() <-chan struct{} { return s.done }

// Valid reports whether this process may still act on the session.
func (s *Session) Valid() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return (s.state == StateConnected || s.state == StateSuspended) && now() < s.validUntil
}

// ValidFor is how long the session stays valid without another acknowledgement.
func (s *Session) ValidFor() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return max(0, s.validUntil-now())
}

// Close stops acting on the session and closes it on the cluster (releasing what its
// members hold at once), then waits for its goroutines. If its validity already ended,
// callbacks hear Lost first. Calling it again does nothing.
func (s *Session) Close(ctx context.Context) error {
	s.mu.Lock()
	first := !s.closeSent
	s.closeSent = true
	ended := now() >= s.validUntil
	s.mu.Unlock()
	if ended {
		s.setState(StateLost)
	}
	s.setState(StateClosed)
	s.cancel()
	s.wg.Wait()
	if !first {
		return nil
	}
	req := &pb.CloseSessionRequest{SessionId: s.id, Own: true, RequestId: NewRequestID()}
	err := s.c.call(ctx, true, func(ctx context.Context, cc *grpc.ClientConn, o ...grpc.CallOption) error {
		_, err := pb.NewSessionsClient(cc).Close(ctx, req, o...)
		return err
	})
	if errors.Is(err, ErrNotFound) { // expired or closed already
		return nil
	}
	return err
}

// setState moves to st unless the state is final; true if it changed.
func (s *Session) setState(st SessionState) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == StateLost || s.state == StateClosed || s.state == st {
		return false
	}
	s.state = st
	s.events = append(s.events, st)
	if st == StateLost || st == StateClosed {
		close(s.done)
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return true
}

func (s *Session) lost() {
	s.setState(StateLost)
	s.cancel()
}

func (s *Session) runCallbacks() {
	defer s.wg.Done()
	for {
		s.mu.Lock()
		events := s.events
		s.events = nil
		s.mu.Unlock()
		for _, st := range events {
			for _, fn := range s.callbacks {
				fn(s, st)
			}
			if st == StateLost || st == StateClosed {
				return
			}
		}
		select {
		case <-s.wake:
		case <-s.ctx.Done():
			s.mu.Lock()
			pending := len(s.events) > 0
			s.mu.Unlock()
			if !pending {
				return
			}
		}
	}
}

func (s *Session) acked(sent time.Duration, resp *pb.KeepAliveResponse) {
	s.mu.Lock()
	s.validUntil = max(s.validUntil, sent+s.validity())
	s.lastAck = max(s.lastAck, sent)
	// The view read at the highest revision wins: a slow answer from before a revoke
	// must not make the slot look held again.
	rev := resp.GetHeader().GetRevision()
	if rev > s.heldRev || (rev == s.heldRev && sent >= s.heldAsOf) {
		s.held = map[slotKey]heldSlot{}
		for _, h := range resp.GetHeld() {
			s.held[slotKey{h.GetGroup(), h.GetSlot()}] = heldSlot{h.GetToken(), h.GetRevoked()}
		}
		s.heldRev, s.heldAsOf = rev, sent
	}
	s.mu.Unlock()
	s.setState(StateConnected)
}

// holds is false once the cluster's newest word shows the slot granted at token (seen
// here at grantedAt) revoked, held under a higher token, or gone (docs/protocol.md, 5).
func (s *Session) holds(group string, slot int32, token int64, grantedAt time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.held[slotKey{group, slot}]
	if ok && h.token == token {
		return !h.revoked
	}
	if ok && h.token > token {
		return false // re-granted since
	}
	return s.heldRev < token && s.heldAsOf <= grantedAt // an older view: no word yet
}

func (s *Session) watchValidity() {
	defer s.wg.Done()
	t := time.NewTicker(max(5*time.Millisecond, s.ttl/50))
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		n := now()
		s.mu.Lock()
		validUntil, lastAck, st := s.validUntil, s.lastAck, s.stream
		s.mu.Unlock()
		if n >= validUntil {
			s.lost()
			return
		}
		if n-lastAck > s.ttl/2 {
			s.setState(StateSuspended)
			// A hung leader (SIGSTOP) keeps its socket open: give up on a stream that has
			// had TTL/2 to answer, and look for the new leader while still valid.
			if st != nil && n-max(lastAck, st.openedAt) > s.ttl/2 {
				st.stalled.Store(true)
				st.cancel()
			}
		}
	}
}

func (s *Session) keepAlive() {
	defer s.wg.Done()
	interval := s.ttl / 3
	ep := ""
	for s.ctx.Err() == nil {
		if ep == "" {
			ep = s.leaderEndpoint()
			if ep == "" {
				sleep(s.ctx, min(50*time.Millisecond, interval))
				continue
			}
		}
		err := s.runStream(ep, interval)
		ep = ""
		if err != nil && s.ctx.Err() == nil {
			var ce *Error
			s.mu.Lock()
			stalled := s.stalled
			s.mu.Unlock()
			if errors.As(err, &ce) && ce.LeaderAddress != "" && ce.LeaderAddress != stalled {
				ep = ce.LeaderAddress
			}
			s.setState(StateSuspended)
			sleep(s.ctx, 20*time.Millisecond)
		}
	}
}

// leaderEndpoint asks every endpoint briefly, skipping a leader that just stalled on us
// (if nobody knows better, it is tried again next time).
func (s *Session) leaderEndpoint() string {
	s.mu.Lock()
	skip := s.stalled
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(s.ctx, time.Duration(len(s.c.cfg.Endpoints))*200*time.Millisecond)
	defer cancel()
	addr, _ := s.c.FindLeader(ctx, skip)
	if addr == "" {
		s.mu.Lock()
		s.stalled = ""
		s.mu.Unlock()
	}
	return addr
}

func (s *Session) runStream(ep string, interval time.Duration) error {
	cc, err := s.c.conn(ep)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	handle := &keepAliveStream{cancel: cancel, openedAt: now()}
	s.mu.Lock()
	s.stream = handle
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.stream == handle {
			s.stream = nil
		}
		s.mu.Unlock()
	}()
	stream, err := pb.NewSessionsClient(cc).KeepAlive(sctx)
	if err != nil {
		return translate(err, nil, ep)
	}
	var sentMu sync.Mutex
	sent := map[uint64]time.Duration{}
	senderDone := make(chan struct{})
	go func() {
		defer close(senderDone)
		t := time.NewTimer(0)
		defer t.Stop()
		for seq := uint64(1); ; seq++ {
			select {
			case <-sctx.Done():
				return
			case <-t.C:
			}
			sentMu.Lock()
			sent[seq] = now()
			sentMu.Unlock()
			if stream.Send(&pb.KeepAliveRequest{SessionId: s.id, Seq: seq}) != nil {
				return // Recv reports why
			}
			t.Reset(interval)
		}
	}()
	defer func() { cancel(); <-senderDone }()
	for {
		resp, err := stream.Recv()
		if err != nil {
			if s.ctx.Err() != nil || handle.stalled.Load() {
				if handle.stalled.Load() {
					s.mu.Lock()
					s.stalled = ep
					s.mu.Unlock()
				}
				return nil
			}
			return translate(err, stream.Trailer(), ep)
		}
		if resp.GetExpired() {
			s.lost()
			return nil
		}
		sentMu.Lock()
		at, ok := sent[resp.GetSeq()]
		for seq := range sent {
			if seq <= resp.GetSeq() {
				delete(sent, seq)
			}
		}
		sentMu.Unlock()
		if ok {
			s.acked(at, resp)
		}
		for _, step := range resp.GetStepdown() {
			s.stepDown(step, resp.GetHeader().GetRevision())
		}
	}
}

// stepDown hands a step-down request to the holdings it names.
func (s *Session) stepDown(step *pb.StepDown, revision int64) {
	s.mu.Lock()
	var ls []*Leadership
	for l := range s.leaderships {
		ls = append(ls, l)
	}
	s.mu.Unlock()
	for _, l := range ls {
		l.onStepDown(step, revision)
	}
}

func (s *Session) addLeadership(l *Leadership) {
	s.mu.Lock()
	s.leaderships[l] = struct{}{}
	s.mu.Unlock()
}

func (s *Session) forget(l *Leadership) {
	s.mu.Lock()
	delete(s.leaderships, l)
	s.mu.Unlock()
}
