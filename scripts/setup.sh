#!/usr/bin/env bash
# Installs what building and testing braid needs on a fresh Debian machine. Safe to re-run:
# it only installs what is missing.
set -euo pipefail

need_apt=()
command -v cc >/dev/null || need_apt+=(build-essential)
command -v python3 >/dev/null || need_apt+=(python3 python3-venv)
command -v psql >/dev/null || need_apt+=(postgresql-client)
# systemd-analyze and systemd-socket-activate, for the unit-file and socket-activation tests.
{ command -v systemd-analyze >/dev/null && command -v systemd-socket-activate >/dev/null; } ||
  need_apt+=(systemd)

if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

command -v cargo >/dev/null || {
  echo "cargo not found: install Rust with rustup (https://rustup.rs) first" >&2
  exit 1
}
