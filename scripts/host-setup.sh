#!/usr/bin/env bash
# Installs the Debian packages skiff and its tests need, when missing. Quiet and fast when all are present:
# one dpkg-query, no apt-get update. Run as root on Debian 12.
set -euo pipefail

packages=(
  runc                          # default OCI runtime
  runsc                         # gVisor, the second runtime handler
  conmon                        # container monitor: holds stdio, writes CRI logs, records exit codes
  containernetworking-plugins   # CNI plugins (bridge, host-local, portmap, loopback) in /usr/lib/cni
  catatonit                     # tiny init for pods that share a PID namespace without a pause image
  iproute2 iptables             # netns and port mappings
  socat                         # port-forward: one socat per connection inside the pod's netns (nsenter: util-linux)
  attr                          # setfattr: xattrs and overlay opaque dirs when unpacking layers
  zstd                          # tests: zstd-compressed layers
  docker-registry skopeo        # tests: a loopback OCI registry and the tool that pushes images to it
  apache2-utils                 # tests: htpasswd, for a registry that wants credentials
  busybox-static                # tests: the userland of the test images
  protobuf-compiler             # protoc: regenerates src/cri/gen from proto/ (drift check in npm test)
  jq
  gcc libc6-dev                 # builds skiff-helper (src/helper/skiff-helper.c) in `npm run build`
  g++ make python3              # node-gyp: npm ci builds node-pty and zstd-napi from source
)

if [[ $(id -u) -ne 0 ]]; then
  echo "host-setup: run as root (it installs Debian packages)" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]} > 0)); then
  echo "host-setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if ((major < 20)); then
  echo "host-setup: skiff needs Node.js 20 or newer (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi
