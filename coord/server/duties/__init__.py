"""What the leader runs on its own clock: session and group waits, member health checks,
scheduled backups, webhook notifications; and noticing this node's removal."""
