"""Command-line tools: ``coord`` (serve, dev cluster) and ``coordctl`` (operations)."""

import os

# gRPC core logs every failed TLS handshake at INFO on stderr (of coordctl, and of a
# node, once per refused connection); coord reports what matters itself. Set
# GRPC_VERBOSITY=INFO (or DEBUG) to see them. Before anything imports grpc.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
