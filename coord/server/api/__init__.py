"""The gRPC servicers, one module per service, and what they share: the handler wrapper and
the node context. Servicers never import the leader's duties (an import contract)."""
