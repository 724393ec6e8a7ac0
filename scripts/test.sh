#!/usr/bin/env bash
# The whole test suite from a clean clone, as root: host packages, npm packages, then `npm test`
# (type check, lint, format check, build, drift checks, unit and end-to-end tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/host-setup.sh
# zstd-napi: build from source with node-gyp; never try a prebuilt download from a non-npm host.
export npm_config_build_from_source=true
npm ci --no-audit --no-fund --loglevel=error
npm test
