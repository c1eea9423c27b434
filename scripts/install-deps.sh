#!/usr/bin/env bash
# Installs what Damselfly's tests, benchmarks and demo run against, when it is missing:
# CNCF Distribution (docker-registry), skopeo, containerd/ctr, Docker Engine (dockerd and the
# docker CLI), redis-server, curl, iproute2.
# Idempotent; needs root (or sudo) only when something is missing.
set -euo pipefail

need=()
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v skopeo >/dev/null || need+=(skopeo)
command -v containerd >/dev/null || need+=(containerd)
# The docker tests start daemons of their own: an engine already there (docker.io or docker-ce,
# with its CLI) is used as it is.
command -v dockerd >/dev/null || need+=(docker.io)
command -v unshare >/dev/null || need+=(util-linux)   # setpriv, unshare: test dockerds in namespaces
command -v redis-server >/dev/null || need+=(redis-server)
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)   # the Harbor token test makes its signing key
command -v ip >/dev/null || need+=(iproute2)
command -v cc >/dev/null || need+=(gcc libc6-dev)

if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${need[*]}" >&2
  $sudo apt-get update -qq
  # Package services never start on their own here (no systemd): tests run their own instances.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    echo "cargo is in ~/.cargo/bin: add it to PATH" >&2
  else
    echo "cargo not found: install a Rust toolchain (1.85 or newer), e.g. with rustup" >&2
  fi
  exit 1
fi
