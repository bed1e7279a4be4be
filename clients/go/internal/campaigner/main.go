// Command campaigner is the Go side of tests/integration/test_go_client.py's conformance
// scenario: it campaigns in a group again and again and prints, on CLOCK_MONOTONIC
// (shared by every process of the machine), each moment it finds itself master:
//
//	master TOKEN NANOS     (every ~10 ms while IsMaster)
//	ended TOKEN NANOS
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	coord "github.com/coord/coord/clients/go"
)

func mono() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

func main() {
	endpoints := flag.String("endpoints", os.Getenv("COORD_ENDPOINTS"), "HOST:PORT,...")
	group := flag.String("group", "", "group")
	id := flag.String("id", "", "member id")
	ttl := flag.Duration("ttl", 2*time.Second, "session TTL")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, *endpoints, *group, *id, *ttl); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "campaigner:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, endpoints, group, id string, ttl time.Duration) error {
	eps, err := coord.ParseEndpoints(endpoints)
	if err != nil {
		return err
	}
	c, err := coord.New(coord.Config{Endpoints: eps})
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	for ctx.Err() == nil {
		if err := term(ctx, c, group, id, ttl); err != nil && ctx.Err() == nil {
			fmt.Fprintln(os.Stderr, "campaigner: term:", err)
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// term is one session: register, campaign, act while master, until the session ends.
func term(ctx context.Context, c *coord.Client, group, id string, ttl time.Duration) error {
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	s, err := c.OpenSession(octx, ttl)
	cancel()
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Close(cctx)
	}()
	m, err := s.Register(ctx, group, id)
	if err != nil {
		return err
	}
	for ctx.Err() == nil && s.Valid() {
		cctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-s.Done():
			case <-cctx.Done():
			}
			cancel()
		}()
		lead, err := m.Campaign(cctx)
		cancel()
		if err != nil {
			return err
		}
		for ctx.Err() == nil {
			t := mono() // read before the check: a pause after it cannot stretch the record
			if !lead.IsMaster() {
				break
			}
			fmt.Printf("master %d %d\n", lead.Token(), t)
			time.Sleep(10 * time.Millisecond)
		}
		fmt.Printf("ended %d %d\n", lead.Token(), mono())
		rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = lead.Resign(rctx)
		rcancel()
	}
	return nil
}
