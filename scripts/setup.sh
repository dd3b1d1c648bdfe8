#!/usr/bin/env bash
# One-time set-up on a fresh Debian/Ubuntu machine: the system packages the native `gl`
# module (gpu.js's headless WebGL) builds against and runs under, and redis-server (the queue
# mode's tests start their own on a free loopback port), then a clean npm install and the
# native kernel (kernels/native: a C compiler and the Node headers, as `gl` needs).
# Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="build-essential python3 pkg-config libx11-dev libxext-dev libxi-dev libgl1 libglx-mesa0 libgl1-mesa-dri xvfb xauth redis-server"
if command -v apt-get >/dev/null 2>&1; then
  missing=$(dpkg-query -W -f='${Status} ${Package}\n' $APT_PACKAGES 2>/dev/null | grep -vc '^install ok installed' || true)
  if [ "$missing" != "0" ] || ! command -v xvfb-run >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" = "0" ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $APT_PACKAGES >/dev/null
  fi
else
  echo "setup: no apt-get; install the equivalents of: $APT_PACKAGES (needed only for the gpu.js backend)" >&2
fi

# `gl` compiles against the installed Node headers.
export npm_config_nodedir="${npm_config_nodedir:-/usr}"
[ -d "$npm_config_nodedir/include/node" ] || unset npm_config_nodedir
npm ci --no-audit --no-fund
# the native product for pinned weights (kernels/native), compiled for this machine's CPU
npm run build:native
npm run build
