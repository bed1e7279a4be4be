#!/usr/bin/env bash
# Regenerate the Python gRPC stubs (+ mypy-protobuf .pyi) for the etcd subset
# in this directory. Needs grpcio-tools and mypy-protobuf in $PYTHON's env
# (both are in the project's dev dependencies).
# Usage: bench/etcdpb/gen.sh        (PYTHON defaults to <repo>/.venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-../../.venv/bin/python}"
BIN="$(dirname "$PYTHON")"
"$PYTHON" -m grpc_tools.protoc -I. \
  --python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. \
  --plugin=protoc-gen-mypy="$BIN/protoc-gen-mypy" \
  --plugin=protoc-gen-mypy_grpc="$BIN/protoc-gen-mypy_grpc" \
  kv.proto rpc.proto v3election.proto
# protoc emits top-level imports ("import rpc_pb2"); make them package-relative
# so `etcdpb` imports the same wherever it sits on sys.path.
sed -i -E \
  -e 's/^import (kv_pb2|rpc_pb2|v3election_pb2)( as |$)/from . import \1\2/' \
  ./*_pb2.py ./*_pb2_grpc.py ./*.pyi
# kv.proto declares no service; its empty grpc modules are not needed.
rm -f kv_pb2_grpc.py kv_pb2_grpc.pyi
