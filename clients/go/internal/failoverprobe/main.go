// Command failoverprobe is the Go side of bench/go_failover.py: failover measured from a
// Go process that uses this client, beside Python processes that use coord.client. It
// prints one JSON line per event, "t" on CLOCK_MONOTONIC in seconds (the clock of
// Python's time.monotonic(), shared by every process of the machine).
//
//	failoverprobe -mode writer -endpoints A,B,C
//	    reads "put KEY" lines on stdin; each is one Put (the client's own discovery,
//	    retries and request id; 30 s for the whole call), then
//	    {"event":"put","key":KEY,"ok":true,"t":...} (or "ok":false with "error")
//	failoverprobe -mode member -endpoints A,B,C -group G -id ID [-ttl 2s]
//	    opens a session, registers, campaigns once:
//	    {"event":"session","state":"connected"}, {"event":"campaigning"},
//	    {"event":"elected","token":N,"t":...}; holds until SIGTERM (then resigns and
//	    closes its session) or until it is no longer master ({"event":"not_master"}).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	coord "github.com/coord/coord/clients/go"
)

var outMu sync.Mutex

func mono() float64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return float64(ts.Nano()) / 1e9
}

// say prints one event; "t" is taken here unless the caller gave it.
func say(event string, fields map[string]any) {
	if fields == nil {
		fields = map[string]any{}
	}
	fields["event"] = event
	if _, ok := fields["t"]; !ok {
		fields["t"] = mono()
	}
	b, _ := json.Marshal(fields)
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Println(string(b))
}

func main() {
	mode := flag.String("mode", "", "writer or member")
	endpoints := flag.String("endpoints", os.Getenv("COORD_ENDPOINTS"), "HOST:PORT,...")
	group := flag.String("group", "", "member: the group")
	id := flag.String("id", "", "member: its id")
	ttl := flag.Duration("ttl", 2*time.Second, "member: the session's TTL")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	eps, err := coord.ParseEndpoints(*endpoints)
	if err != nil {
		fmt.Fprintln(os.Stderr, "failoverprobe:", err)
		os.Exit(2)
	}
	c, err := coord.New(coord.Config{Endpoints: eps})
	if err != nil {
		fmt.Fprintln(os.Stderr, "failoverprobe:", err)
		os.Exit(2)
	}
	defer func() { _ = c.Close() }()
	switch *mode {
	case "writer":
		err = writer(ctx, c)
	case "member":
		err = member(ctx, c, *group, *id, *ttl)
	default:
		err = fmt.Errorf("-mode %q: want writer or member", *mode)
	}
	if err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "failoverprobe:", err)
		os.Exit(1)
	}
}

func writer(ctx context.Context, c *coord.Client) error {
	say("ready", nil)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		key, ok := strings.CutPrefix(strings.TrimSpace(in.Text()), "put ")
		if !ok {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := c.Put(pctx, key, "v")
		cancel()
		if err != nil {
			say("put", map[string]any{"key": key, "ok": false, "error": err.Error()})
		} else {
			say("put", map[string]any{"key": key, "ok": true})
		}
	}
	return in.Err()
}

func member(ctx context.Context, c *coord.Client, group, id string, ttl time.Duration) error {
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, err := c.OpenSession(octx, ttl)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_ = s.Close(cctx)
	}()
	m, err := s.Register(octx, group, id)
	if err != nil {
		return err
	}
	say("session", map[string]any{"state": "connected", "id": s.ID()})
	cctx, ccancel := context.WithCancel(ctx)
	defer ccancel()
	go func() {
		select {
		case <-s.Done():
		case <-cctx.Done():
		}
		ccancel()
	}()
	say("campaigning", nil)
	lead, err := m.Campaign(cctx)
	if err != nil {
		return err
	}
	say("elected", map[string]any{"token": lead.Token(), "slot": lead.Slot()})
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for lead.IsMaster() {
		select {
		case <-ctx.Done(): // SIGTERM: stop acting, then resign
			rctx, rcancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer rcancel()
			return lead.Resign(rctx)
		case <-tick.C:
		}
	}
	say("not_master", nil)
	return nil
}
