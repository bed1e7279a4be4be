// Command kvprobe is the Go side of tests/integration/test_go_client.py's KV check: under
// -prefix it does a compare-and-swap transaction, a stale one, and a put bound to its
// session, then waits for a line on stdin, closes the session and watches the prefix
// for the deletion of the bound keys. It prints one line per step:
//
//	cas SUCCEEDED RESPONSES     Txn: mod_revision(P+cas) == -rev ? put cas, put txn-bound (session)
//	stale SUCCEEDED             the same compare again: the Else branch puts P+else
//	bound SESSION_ID REVISION   Put P+bound with the session
//	closed                      the session is closed
//	event TYPE CAUSE KEY,KEY    the first event of the prefix watch after the put
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	coord "github.com/coord/coord/clients/go"
)

func main() {
	endpoints := flag.String("endpoints", os.Getenv("COORD_ENDPOINTS"), "HOST:PORT,...")
	prefix := flag.String("prefix", "", "key prefix")
	rev := flag.Int64("rev", 0, "the mod_revision of PREFIX+cas the transaction expects")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, *endpoints, *prefix, *rev); err != nil {
		fmt.Fprintln(os.Stderr, "kvprobe:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, endpoints, p string, rev int64) error {
	eps, err := coord.ParseEndpoints(endpoints)
	if err != nil {
		return err
	}
	c, err := coord.New(coord.Config{Endpoints: eps})
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	s, err := c.OpenSession(ctx, 10*time.Second, coord.WithSessionName("kvprobe"))
	if err != nil {
		return err
	}
	defer func() { _ = s.Close(context.Background()) }() // on an early error

	cas := func() coord.Cmp { return coord.ModRevision(p + "cas").Eq(rev) }
	resp, err := c.Txn(ctx).If(cas()).
		Then(coord.OpPut(p+"cas", "go"), coord.OpPut(p+"txn-bound", "t", coord.WithSession(s))).
		Else(coord.OpPut(p+"lost", "1")).
		Commit()
	if err != nil {
		return err
	}
	fmt.Printf("cas %v %d\n", resp.GetSucceeded(), len(resp.GetResponses()))
	resp, err = c.Txn(ctx).If(cas()).Then(coord.OpPut(p+"cas", "again")).Else(coord.OpPut(p+"else", "ran")).Commit()
	if err != nil {
		return err
	}
	fmt.Printf("stale %v\n", resp.GetSucceeded())
	put, err := c.Put(ctx, p+"bound", "p", coord.WithSession(s))
	if err != nil {
		return err
	}
	fmt.Printf("bound %s %d\n", s.ID(), put.GetKv().GetModRevision())

	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return err
	}
	if err := s.Close(ctx); err != nil {
		return err
	}
	fmt.Println("closed")
	for ev, err := range c.Watch(ctx, put.GetKv().GetModRevision()+1, coord.WatchOptions{KeyPrefix: p}) {
		if err != nil {
			return err
		}
		var keys []string
		for _, k := range ev.GetDeletedKeys() {
			keys = append(keys, string(k))
		}
		fmt.Printf("event %s %s %s\n", ev.GetType(), ev.GetCause(), strings.Join(keys, ","))
		return nil
	}
	return errors.New("the watch ended without an event")
}
