package coord

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	pb "github.com/coord/coord/clients/go/coordpb"
)

// Defaults of Config.
const (
	DefaultAttemptTimeout = 2 * time.Second
	DefaultLeaderAsk      = 300 * time.Millisecond
	suspectFor            = 2 * time.Second        // a failed endpoint is tried last this long
	streamSilence         = 3 * time.Second        // servers send at least once a second
	maxBackoff            = 250 * time.Millisecond // retries: jitter in [0, d], d doubling to this
)

// Config configures a Client.
type Config struct {
	// Endpoints: each node's client API address, HOST:PORT (no default port).
	Endpoints []string
	// AttemptTimeout bounds one attempt on one endpoint (default 2 s); the context given
	// to each call bounds the whole call, retries included.
	AttemptTimeout time.Duration
	// LeaderAsk bounds one node's answer to GetLeader during discovery (default 0.3 s:
	// a hung node must cost little).
	LeaderAsk time.Duration
	// DialOptions replace the default insecure transport credentials (TLS, a token).
	DialOptions []grpc.DialOption
}

// Client talks to a coord cluster. It is safe for concurrent use.
type Client struct {
	cfg   Config
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
	// preferred is the leader's client API address when known.
	preferred string
	next      int
	suspect   map[string]time.Time
	closed    bool
}

// ParseEndpoints splits "a:1,b:2" and refuses an endpoint without a valid port.
func ParseEndpoints(s string) ([]string, error) {
	var out []string
	for _, ep := range strings.Split(s, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			out = append(out, ep)
		}
	}
	return out, checkEndpoints(out)
}

func checkEndpoints(eps []string) error {
	if len(eps) == 0 {
		return &Error{Reason: ReasonInvalidArgument, Message: "no endpoints: give at least one host:port"}
	}
	for _, ep := range eps {
		i := strings.LastIndex(ep, ":")
		if i <= 0 || strings.HasSuffix(ep, "]") {
			return &Error{Reason: ReasonInvalidArgument, Message: fmt.Sprintf(
				"endpoint %q has no port: give HOST:PORT, a node's client API address", ep)}
		}
		if p, err := strconv.Atoi(ep[i+1:]); err != nil || p < 1 || p > 65535 {
			return &Error{Reason: ReasonInvalidArgument, Message: fmt.Sprintf(
				"endpoint %q: port %q is not a number in 1..65535", ep, ep[i+1:])}
		}
	}
	return nil
}

// New makes a client; it connects lazily (no I/O here).
func New(cfg Config) (*Client, error) {
	if err := checkEndpoints(cfg.Endpoints); err != nil {
		return nil, err
	}
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = DefaultAttemptTimeout
	}
	if cfg.LeaderAsk <= 0 {
		cfg.LeaderAsk = DefaultLeaderAsk
	}
	if cfg.DialOptions == nil {
		cfg.DialOptions = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	cfg.Endpoints = append([]string(nil), cfg.Endpoints...)
	return &Client{
		cfg: cfg, conns: map[string]*grpc.ClientConn{}, suspect: map[string]time.Time{},
		next: rand.IntN(len(cfg.Endpoints)),
	}, nil
}

// Endpoints returns the configured endpoints.
func (c *Client) Endpoints() []string { return append([]string(nil), c.cfg.Endpoints...) }

// Close closes every connection. Sessions should be closed first.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var first error
	for ep, cc := range c.conns {
		if err := cc.Close(); err != nil && first == nil {
			first = err
		}
		delete(c.conns, ep)
	}
	return first
}

func (c *Client) conn(ep string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, &Error{Reason: ReasonUnavailable, Message: "client closed"}
	}
	if cc := c.conns[ep]; cc != nil {
		return cc, nil
	}
	cc, err := grpc.NewClient("passthrough:///"+ep, c.cfg.DialOptions...)
	if err != nil {
		return nil, &Error{Reason: ReasonInvalidArgument, Message: err.Error(), Endpoint: ep}
	}
	c.conns[ep] = cc
	return cc, nil
}

// NewRequestID returns a fresh request id for one logical write: send the same id on
// every retry of that write (the cluster applies it once and answers the first result).
func NewRequestID() string {
	var b [16]byte
	if _, err := cryptoRead(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return hex.EncodeToString(b[:])
}

var cryptoRead = crand.Read

// candidate picks the endpoint for the next attempt: the leader when known and not
// suspect, else round-robin over endpoints not suspect (all of them if none is).
func (c *Client) candidate(preferLeader bool) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := time.Now()
	if preferLeader && c.preferred != "" && !t.Before(c.suspect[c.preferred]) {
		return c.preferred
	}
	n := len(c.cfg.Endpoints)
	c.next++
	for i := range n {
		ep := c.cfg.Endpoints[(c.next+i)%n]
		if !t.Before(c.suspect[ep]) {
			return ep
		}
	}
	return c.cfg.Endpoints[c.next%n]
}

// learn follows a redirect hint, or forgets a leader that failed without one.
func (c *Client) learn(err error, ep string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.suspect[ep] = time.Now().Add(suspectFor)
	var hint string
	if ce, ok := err.(*Error); ok {
		hint = ce.LeaderAddress
	}
	if hint != "" && hint != ep && !time.Now().Before(c.suspect[hint]) {
		c.preferred = hint
	} else if ep == c.preferred {
		c.preferred = ""
	}
}

func (c *Client) noteLeader(address string) {
	if address != "" {
		c.mu.Lock()
		c.preferred = address
		c.mu.Unlock()
	}
}

func (c *Client) leaderHint() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.preferred
}

// attemptFunc is one attempt on one connection; opts carry the trailer capture.
type attemptFunc func(ctx context.Context, cc *grpc.ClientConn, opts ...grpc.CallOption) error

// call runs fn until it succeeds, fails with an error that is not retryable, or ctx ends
// (then the last error is returned, wrapped with the context's).
func (c *Client) call(ctx context.Context, preferLeader bool, fn attemptFunc) error {
	if preferLeader && c.leaderHint() == "" {
		_, _ = c.FindLeader(ctx, "") // best effort: any node forwards otherwise
	}
	backoff := 10 * time.Millisecond
	var last error
	for {
		if err := ctx.Err(); err != nil {
			if last != nil {
				return fmt.Errorf("%w (last error: %w)", err, last)
			}
			return err
		}
		ep := c.candidate(preferLeader)
		err := c.attempt(ctx, ep, fn)
		if err == nil {
			return nil
		}
		if ctx.Err() == nil && !retryable(err) {
			return err
		}
		last = err
		c.learn(err, ep)
		if !sleep(ctx, time.Duration(rand.Int64N(int64(backoff)+1))) {
			continue // the loop's head reports ctx's end
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

func (c *Client) attempt(ctx context.Context, ep string, fn attemptFunc) error {
	cc, err := c.conn(ep)
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, c.cfg.AttemptTimeout)
	defer cancel()
	var md metadata.MD
	return translate(fn(actx, cc, grpc.Trailer(&md)), md, ep)
}

// sleep waits d or until ctx ends; false if ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// FindLeader asks each endpoint in turn (LeaderAsk each) who leads, ignoring skip (a
// leader that just stalled) as endpoint and as answer; the answer is remembered for
// later calls. "" when no node named a leader.
func (c *Client) FindLeader(ctx context.Context, skip string) (string, error) {
	for _, ep := range c.cfg.Endpoints {
		if ep == skip {
			continue
		}
		cc, err := c.conn(ep)
		if err != nil {
			return "", err
		}
		actx, cancel := context.WithTimeout(ctx, c.cfg.LeaderAsk)
		resp, err := pb.NewClusterClient(cc).GetLeader(actx, &pb.GetLeaderRequest{})
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return "", ctx.Err()
			}
			continue
		}
		if a := resp.GetLeaderApiAddress(); a != "" && a != skip {
			c.noteLeader(a)
			return a, nil
		}
	}
	return "", nil
}

// Leader returns the current leader as a node that knows one sees it, retrying while
// an election runs.
func (c *Client) Leader(ctx context.Context) (*pb.GetLeaderResponse, error) {
	var resp *pb.GetLeaderResponse
	err := c.call(ctx, false, func(ctx context.Context, cc *grpc.ClientConn, o ...grpc.CallOption) error {
		r, err := pb.NewClusterClient(cc).GetLeader(ctx, &pb.GetLeaderRequest{}, o...)
		if err == nil && r.GetLeaderId() == "" {
			return &Error{Reason: ReasonNoLeader, Message: "no leader elected yet"}
		}
		resp = r
		return err
	})
	if err != nil {
		return nil, err
	}
	c.noteLeader(resp.GetLeaderApiAddress())
	return resp, nil
}

// Status returns the status of whichever node answers first.
func (c *Client) Status(ctx context.Context) (*pb.StatusResponse, error) {
	var resp *pb.StatusResponse
	err := c.call(ctx, false, func(ctx context.Context, cc *grpc.ClientConn, o ...grpc.CallOption) (err error) {
		resp, err = pb.NewClusterClient(cc).Status(ctx, &pb.StatusRequest{}, o...)
		return err
	})
	return resp, err
}

// leaderConn returns a connection to the leader (or any endpoint when none is known).
func (c *Client) leaderConn(ctx context.Context) (string, *grpc.ClientConn, error) {
	ep := c.leaderHint()
	if ep == "" {
		if r, err := c.Leader(ctx); err == nil {
			ep = r.GetLeaderApiAddress()
		} else if ctx.Err() != nil {
			return "", nil, err
		}
	}
	if ep == "" {
		ep = c.candidate(false)
	}
	cc, err := c.conn(ep)
	return ep, cc, err
}
