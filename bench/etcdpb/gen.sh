#!/usr/bin/env bash
# Regenerate the Python gRPC stubs for the etcd subset in this directory.
# Usage: bench/etcdpb/gen.sh   (PYTHON=/path/to/python with grpcio-tools)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
"$PYTHON" -m grpc_tools.protoc -I. \
  --python_out=. --pyi_out=. --grpc_python_out=. \
  kv.proto rpc.proto v3election.proto
# protoc emits "import rpc_pb2 as ..." (top-level imports); make them
# package-relative so `etcdpb` works wherever it sits on sys.path.
sed -i -E 's/^import (kv_pb2|rpc_pb2|v3election_pb2) as /from . import \1 as /' \
  ./*_pb2.py ./*_pb2_grpc.py ./*_pb2.pyi
# kv.proto declares no service; its empty grpc module is not needed.
rm -f kv_pb2_grpc.py
