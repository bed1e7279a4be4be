"""Who may call: tokens and mTLS identities mapped to roles, the guard in front of every
RPC, and a node's TLS and peer-credential wiring."""
