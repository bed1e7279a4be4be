"""One coord node: thin gRPC servicers over the Raft node, and the wiring."""
