// Package coord is the Go client of coord, a Raft-based HA coordinator: who is master
// of what. It speaks the gRPC API of proto/coord/v1 (generated into package coordpb)
// and follows docs/protocol.md, the client protocol every coord client keeps to.
//
//	c, err := coord.New(coord.Config{Endpoints: []string{"127.0.0.1:2379", "127.0.0.1:2381"}})
//	defer c.Close()
//	s, err := c.OpenSession(ctx, 5*time.Second)          // keepalives in the background
//	defer s.Close(context.Background())
//	m, err := s.Register(ctx, "orders", "orders-1", coord.WithPriority(10))
//	lead, err := m.Campaign(ctx)                          // blocks until elected
//	for lead.IsMaster() {
//		storage.Write(data, lead.Token())                 // the resource checks the token
//	}
//
// What the client does for you:
//
//   - Leader discovery (GetLeader on each endpoint in turn, briefly), redirect hints from
//     the coord-leader trailer, jittered retries of retryable errors (*Error.Retryable).
//   - A request id on every write, the same on every retry of it (NewRequestID).
//   - Sessions kept alive on a stream to the leader, with the validity rule: a session is
//     valid until the send time of the newest acknowledged keepalive + TTL × (1 − drift),
//     on CLOCK_BOOTTIME (Linux) or the monotonic clock; CONNECTED, SUSPENDED, LOST, CLOSED
//     reported to state callbacks once per transition, in order.
//   - Leadership.IsMaster: false once the session's validity ends, the holding was
//     resigned (the client resigns at once when asked to step down), or a keepalive shows
//     it revoked, re-granted or gone.
//   - Watch and Observe resume after failures without gaps (iterators: range over them);
//     WatchOptions.KeyPrefix keeps the key-value events of keys under a prefix.
//   - Transactions, etcd clientv3 style, under one request id however often retried:
//     c.Txn(ctx).If(coord.ModRevision(k).Eq(rev)).Then(coord.OpPut(k, v)).Else(...).Commit().
//   - Keys bound to a session (Put or OpPut with WithSession(s)): the cluster deletes
//     them in the same apply that ends the session (docs/protocol.md, section 8).
//
// Every call takes a context.Context: its deadline bounds the whole call, retries
// included; Config.AttemptTimeout bounds one attempt on one endpoint. Background work
// (a session's keepalives, watchdog and callbacks) stops when the session is closed or
// lost; Client.Close closes the connections.
package coord
