#!/usr/bin/env bash
# Installs what Damselfly's tests, benchmarks and demo run against, when it is missing:
# CNCF Distribution (docker-registry), skopeo, containerd/ctr, Docker Engine (dockerd and the
# docker CLI), redis-server, curl, iproute2, chromium (headless).
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
command -v chromium >/dev/null || need+=(chromium)   # the status page is checked in a real browser

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

# --deploy: what deploy/'s tests need besides the above: debootstrap (the images' base), a
# running Docker Engine with docker-compose, and the chart test's Python packages in a
# virtualenv under the target directory.
if [ "${1:-}" = "--deploy" ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  need=()
  command -v debootstrap >/dev/null || need+=(debootstrap)
  command -v docker >/dev/null || need+=(docker.io)
  command -v docker-compose >/dev/null || need+=(docker-compose)
  command -v systemd-analyze >/dev/null || need+=(systemd)
  python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  if ! docker info >/dev/null 2>&1; then
    # No init system starts it here: run the daemon ourselves and wait (bounded) for it.
    mkdir -p "${CARGO_TARGET_DIR:-target}"
    $sudo sh -c "nohup dockerd >'${CARGO_TARGET_DIR:-target}/dockerd.log' 2>&1 &"
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { echo "the Docker daemon did not start" >&2; tail -20 "${CARGO_TARGET_DIR:-target}/dockerd.log" >&2; exit 1; }
  fi
  venv="${CARGO_TARGET_DIR:-target}/deploy-venv"
  if ! "$venv/bin/python" -c 'import helm_python, kubernetes_validate, yaml' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check 'helm-python-sdk==0.2.2' 'kubernetes-validate==1.37.0' pyyaml
  fi
fi
