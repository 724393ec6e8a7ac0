#!/usr/bin/env bash
# The whole test suite from a clean clone, as root: host packages, npm packages, then `npm test`
# (type check, lint, format check, build, drift checks, unit and end-to-end tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/host-setup.sh
npm ci --no-audit --no-fund --loglevel=error
npm test
