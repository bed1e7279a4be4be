package coord

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	pb "github.com/coord/coord/clients/go/coordpb"
)

// CreateGroup creates a group with this policy (at least Slots). ErrAlreadyExists
// (errors.Is) when a group of that name exists.
func (c *Client) CreateGroup(ctx context.Context, name string, policy *pb.GroupPolicy) (*pb.Group, error) {
	req := &pb.CreateGroupRequest{Name: name, Policy: policy, RequestId: NewRequestID()}
	var resp *pb.GroupResponse
	err := c.call(ctx, true, func(ctx context.Context, cc *grpc.ClientConn, o ...grpc.CallOption) (err error) {
		resp, err = pb.NewGroupsClient(cc).Create(ctx, req, o...)
		return err
	})
	return resp.GetGroup(), err
}

// Masters returns a group's current masters (linearizable).
func (c *Client) Masters(ctx context.Context, group string) ([]*pb.Holding, error) {
	var resp *pb.MastersResponse
	err := c.call(ctx, true, func(ctx context.Context, cc *grpc.ClientConn, o ...grpc.CallOption) (err error) {
		resp, err = pb.NewGroupsClient(cc).Masters(ctx, &pb.MastersRequest{Group: group}, o...)
		return err
	})
	return resp.GetMasters(), err
}

// MemberOption configures Register.
type MemberOption func(*pb.Member)

// WithAddress sets the member's address (what its clients connect to).
func WithAddress(a string) MemberOption { return func(m *pb.Member) { m.Address = a } }

// WithPriority sets the member's priority (higher is preferred for mastership).
func WithPriority(p int32) MemberOption { return func(m *pb.Member) { m.Priority = p } }

// Member is a member of a group bound to a session.
type Member struct {
	s     *Session
	Group string
	ID    string
}

// Register registers memberID in group, bound to this session.
func (s *Session) Register(ctx context.Context, group, memberID string, opts ...MemberOption) (*Member, error) {
	rec := &pb.Member{Group: group, Id: memberID, SessionId: s.id, Weight: 1}
	for _, o := range opts {
		o(rec)
	}
	req := &pb.RegisterRequest{Member: rec, RequestId: NewRequestID()}
	err := s.c.call(ctx, true, func(ctx context.Context, cc *grpc.ClientConn, o ...grpc.CallOption) error {
		_, err := pb.NewGroupsClient(cc).Register(ctx, req, o...)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &Member{s: s, Group: group, ID: memberID}, nil
}

// Campaign blocks until this member holds a slot, ctx ends, or the session ends. The
// campaign is re-sent to whichever node answers after failures, each send with a fresh
// request id (campaigning is idempotent; docs/protocol.md, section 2).
func (m *Member) Campaign(ctx context.Context) (*Leadership, error) {
	c := m.s.c
	for {
		if !m.s.Valid() {
			return nil, ErrSessionEnded
		}
		hold, ep, err := m.campaignOnce(ctx)
		if err == nil {
			l := &Leadership{m: m, slot: hold.GetSlot(), token: hold.GetToken(), grantedAt: now()}
			m.s.addLeadership(l)
			return l, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		if !retryable(err) {
			return nil, err
		}
		if ep != "" {
			c.learn(err, ep)
		}
		sleep(ctx, 20*time.Millisecond)
	}
}

func (m *Member) campaignOnce(ctx context.Context) (*pb.Holding, string, error) {
	ep, cc, err := m.s.c.leaderConn(ctx)
	if err != nil {
		return nil, ep, err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	guard := time.AfterFunc(streamSilence, cancel) // a hung node keeps its socket open
	defer guard.Stop()
	req := &pb.CampaignRequest{Group: m.Group, MemberId: m.ID, RequestId: NewRequestID()}
	stream, err := pb.NewGroupsClient(cc).Campaign(sctx, req)
	if err != nil {
		return nil, ep, translate(err, nil, ep)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return nil, ep, translate(err, stream.Trailer(), ep)
		}
		guard.Reset(streamSilence)
		if resp.GetElected() {
			return resp.GetHolding(), ep, nil
		}
	}
}

// Resign gives up the slot held under token (0: whatever the member holds) at once, as
// the holder's own session. Stop acting first: the successor may be granted at once.
func (m *Member) Resign(ctx context.Context, token int64) error {
	req := &pb.ResignRequest{Group: m.Group, MemberId: m.ID, SessionId: m.s.id, Token: token,
		RequestId: NewRequestID()}
	return m.s.c.call(ctx, true, func(ctx context.Context, cc *grpc.ClientConn, o ...grpc.CallOption) error {
		_, err := pb.NewGroupsClient(cc).Resign(ctx, req, o...)
		return err
	})
}

// ReportPosition reports the member's position (a WAL LSN, a log offset: a number >= 0
// that only increases) as its own session. A group whose policy sets max_lag_on_failover
// grants a slot only to members within that much of the best position reported; with
// prefer_most_advanced the most advanced wins before priority. A lower position than the
// last is FailedPrecondition.
func (m *Member) ReportPosition(ctx context.Context, position int64) (*pb.Member, error) {
	req := &pb.UpdateMemberRequest{Update: &pb.UpdateMember{Group: m.Group, MemberId: m.ID,
		SessionId: m.s.id, Position: &position}, RequestId: NewRequestID()}
	var out *pb.Member
	err := m.s.c.call(ctx, true, func(ctx context.Context, cc *grpc.ClientConn, o ...grpc.CallOption) error {
		resp, err := pb.NewGroupsClient(cc).UpdateMember(ctx, req, o...)
		if err == nil {
			out = resp.GetMember()
		}
		return err
	})
	return out, err
}

// Leave unregisters the member at once (as its own session), giving up any slot.
func (m *Member) Leave(ctx context.Context) error {
	m.s.mu.Lock()
	for l := range m.s.leaderships {
		if l.m == m {
			l.resigned.Store(true)
			delete(m.s.leaderships, l)
		}
	}
	m.s.mu.Unlock()
	req := &pb.UnregisterRequest{Group: m.Group, MemberId: m.ID, SessionId: m.s.id, RequestId: NewRequestID()}
	return m.s.c.call(ctx, true, func(ctx context.Context, cc *grpc.ClientConn, o ...grpc.CallOption) error {
		_, err := pb.NewGroupsClient(cc).Unregister(ctx, req, o...)
		return err
	})
}

// Leadership is a slot this process holds: its fencing token, and whether it may still
// act as master.
type Leadership struct {
	m         *Member
	slot      int32
	token     int64
	grantedAt time.Duration // on the session's validity clock
	resigned  atomic.Bool
	asked     atomic.Bool
}

// Token is the fencing token: the revision of the grant, strictly increasing per slot.
// Pass it with every write to a protected resource, which rejects lower ones.
func (l *Leadership) Token() int64 { return l.token }

// Slot is the slot held.
func (l *Leadership) Slot() int32 { return l.slot }

// IsMaster reports whether this process may act as master: the session is valid here,
// the slot was not resigned (the client resigns at once when asked to step down), and no
// keepalive acknowledgement shows it revoked, re-granted or gone. Check it before every
// action; once false it stays false.
func (l *Leadership) IsMaster() bool {
	return !l.resigned.Load() && l.m.s.Valid() && l.m.s.holds(l.m.Group, l.slot, l.token, l.grantedAt)
}

// Resign stops acting, then gives up the slot on the cluster (once; later calls do
// nothing). After the session ended there is nothing to give up.
func (l *Leadership) Resign(ctx context.Context) error {
	if l.resigned.Swap(true) {
		return nil
	}
	l.m.s.forget(l)
	if !l.m.s.Valid() {
		return nil
	}
	return l.m.Resign(ctx, l.token)
}

// onStepDown runs on the keepalive goroutine: a request naming this slot, read after the
// grant, ends mastership at once and resigns in the background.
func (l *Leadership) onStepDown(step *pb.StepDown, revision int64) {
	if step.GetGroup() != l.m.Group || step.GetSlot() != l.slot || revision < l.token {
		return
	}
	if !l.IsMaster() || l.asked.Swap(true) {
		return
	}
	l.resigned.Store(true) // stop acting before asking the cluster to release
	l.m.s.forget(l)
	s := l.m.s
	s.wg.Add(1) // the keepalive goroutine (counted) calls this: no race with Wait
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
		defer cancel()
		err := l.m.Resign(ctx, l.token)
		var ce *Error
		if errors.As(err, &ce) && ce.Reason == ReasonFailedPrecondition {
			return // released already
		}
	}()
}
