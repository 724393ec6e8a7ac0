#!/usr/bin/env bash
# Generates src/cri/gen/ from proto/ with ts-proto (protoc from Debian's protobuf-compiler, the plugin from
# node_modules): no network, and the output depends only on the proto and the pinned ts-proto version.
# `--check` regenerates into a temp dir and fails when the committed output has drifted.
set -euo pipefail
cd "$(dirname "$0")/.."
out=src/cri/gen
check=0
if [[ "${1:-}" == "--check" ]]; then
  check=1
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi
mkdir -p "$out"
protoc \
  --plugin=protoc-gen-ts_proto=node_modules/.bin/protoc-gen-ts_proto \
  --ts_proto_out="$out" \
  --ts_proto_opt=outputServices=grpc-js,forceLong=bigint,esModuleInterop=true,importSuffix=.js,env=node,useExactTypes=false \
  --proto_path=proto \
  runtime/v1/api.proto
if [[ $check -eq 1 ]]; then
  if ! diff -r -q "$out" src/cri/gen >/dev/null; then
    echo "src/cri/gen is out of date with proto/: run 'npm run gen' and commit the result" >&2
    diff -r "$out" src/cri/gen | head -40 >&2
    exit 1
  fi
fi
