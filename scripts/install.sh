#!/usr/bin/env bash
# Installs skiff on this node and starts it with built-in defaults (or /etc/skiff/config.toml if present):
# host packages, npm packages, build, /usr/local/bin/skiff, then the daemon (a systemd unit where systemd
# runs, otherwise a background process with its PID in /run/skiff/skiff.pid and logs in /var/log/skiff.log).
# Safe to re-run: a running skiff is restarted on the new build.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
bash scripts/host-setup.sh
# zstd-napi: build from source with node-gyp; never try a prebuilt download from a non-npm host.
export npm_config_build_from_source=true
npm ci --no-audit --no-fund --loglevel=error
npm run --silent build
chmod +x dist/src/main.js
ln -sf "$repo/dist/src/main.js" /usr/local/bin/skiff

socket=/run/skiff/skiff.sock
if [[ -d /run/systemd/system ]]; then
  cat >/etc/systemd/system/skiff.service <<UNIT
[Unit]
Description=skiff CRI container runtime
After=network-online.target

[Service]
ExecStart=/usr/local/bin/skiff serve
KillMode=process
Restart=always
Delegate=yes
LimitNOFILE=1048576

[Install]
WantedBy=multi-user.target
UNIT
  systemctl daemon-reload
  systemctl enable skiff.service >/dev/null
  systemctl restart skiff.service
else
  mkdir -p /run/skiff
  pidfile=/run/skiff/skiff.pid
  if [[ -f $pidfile ]] && kill -0 "$(cat $pidfile)" 2>/dev/null; then
    kill -TERM "$(cat $pidfile)"
    for _ in $(seq 50); do kill -0 "$(cat $pidfile)" 2>/dev/null || break; sleep 0.2; done
  fi
  setsid /usr/local/bin/skiff serve >>/var/log/skiff.log 2>&1 </dev/null &
  echo $! >$pidfile
fi

for _ in $(seq 100); do
  [[ -S $socket ]] && break
  sleep 0.1
done
if [[ ! -S $socket ]]; then
  echo "install: skiff did not start; see /var/log/skiff.log or 'journalctl -u skiff'" >&2
  tail -n 20 /var/log/skiff.log 2>/dev/null >&2 || true
  exit 1
fi
echo "skiff $(skiff --version | cut -d' ' -f2) is serving on unix://$socket"
