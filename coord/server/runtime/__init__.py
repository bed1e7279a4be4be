"""What the node's event loop runs on: background tasks, the tick-thread bridge, state-change
notifications, and the one mapping from coord errors to gRPC statuses."""
