#!/usr/bin/env bash
# Compiles skiff-helper (src/helper/skiff-helper.c) into dist/helper/. Part of `npm run build`.
# Needs gcc and libc6-dev (scripts/host-setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v gcc >/dev/null; then
  echo "build-helper: gcc is missing (apt-get install gcc libc6-dev, or run scripts/host-setup.sh)" >&2
  exit 1
fi
mkdir -p dist/helper
gcc -std=gnu11 -O2 -Wall -Wextra -Werror -o dist/helper/skiff-helper.tmp src/helper/skiff-helper.c
mv -f dist/helper/skiff-helper.tmp dist/helper/skiff-helper
