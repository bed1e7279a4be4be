#!/usr/bin/env bash
# Generate the Go stubs (package coordpb) from proto/coord/v1 with the protoc bundled in
# .venv's grpcio-tools and the pinned protoc-gen-go / protoc-gen-go-grpc that
# scripts/bootstrap builds into .venv/go-bin.
#
#   clients/go/gen.sh          rewrite clients/go/coordpb (committed, never edited)
#   clients/go/gen.sh DIR      write DIR/coordpb instead (make proto-check diffs it)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$repo/clients/go}
bin=$repo/.venv/go-bin
for tool in "$repo/.venv/bin/python" "$bin/protoc-gen-go" "$bin/protoc-gen-go-grpc"; do
  if [ ! -x "$tool" ]; then
    echo "gen.sh: $tool is missing: run scripts/bootstrap" >&2
    exit 1
  fi
done
module=github.com/coord/coord/clients/go
opts=()
for f in "$repo"/proto/coord/v1/*.proto; do
  rel=coord/v1/$(basename "$f")
  opts+=("--go_opt=M$rel=$module/coordpb" "--go-grpc_opt=M$rel=$module/coordpb")
done
mkdir -p "$out/coordpb"
cd "$repo"
.venv/bin/python -m grpc_tools.protoc -Iproto \
  --plugin=protoc-gen-go="$bin/protoc-gen-go" --plugin=protoc-gen-go-grpc="$bin/protoc-gen-go-grpc" \
  --go_out="$out" --go_opt=module=$module --go-grpc_out="$out" --go-grpc_opt=module=$module \
  "${opts[@]}" proto/coord/v1/*.proto
