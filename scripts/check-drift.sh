#!/usr/bin/env bash
# Generated artefacts must match their sources: src/cri/gen from proto/, and config.toml.example from the
# config schema (`skiff config default`). Needs `npm run build` first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/gen-proto.sh --check
if ! diff -u config.toml.example <(node dist/src/main.js config default) >/tmp/skiff-config-drift.$$ 2>&1; then
  echo "config.toml.example differs from 'skiff config default': run" >&2
  echo "  node dist/src/main.js config default > config.toml.example" >&2
  head -40 /tmp/skiff-config-drift.$$ >&2
  rm -f /tmp/skiff-config-drift.$$
  exit 1
fi
rm -f /tmp/skiff-config-drift.$$
