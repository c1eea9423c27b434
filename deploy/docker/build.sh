#!/usr/bin/env bash
# Builds Damselfly's images without any registry: a Debian base made with debootstrap from the
# Debian mirror apt is configured with, then the runtime image with the three daemons (built on
# this host: the base is the same Debian release, so their libc matches).
#
#   deploy/docker/build.sh                 # release binaries; images damselfly:<version>, :latest
#   PROFILE=debug deploy/docker/build.sh   # the binaries `cargo test` already built (CI)
#
# Images: damselfly-base:bookworm (minbase + CA certificates + curl),
#         damselfly-services:bookworm (the base + docker-registry + redis-server, for the compose
#         appliance's demo registry and bundled Redis), damselfly:<version> and damselfly:latest.
# Needs root (debootstrap, chroot) and a running Docker Engine. The base images are built once
# and reused; REBUILD_BASE=1 makes them again.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"
PROFILE="${PROFILE:-release}"
SUITE=bookworm
target="${CARGO_TARGET_DIR:-target}"
work="$target/docker"

mirror() {
  # The first Debian mirror apt uses (deb822 sources or a classic sources.list line).
  local uri
  uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -1 || true)
  [ -n "$uri" ] || uri=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
    | awk '{print $2}' | grep -v security | head -1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

build_bases() {
  command -v debootstrap >/dev/null || { echo "debootstrap is missing (scripts/install-deps.sh --deploy)" >&2; exit 1; }
  local root="$work/rootfs"
  rm -rf "$root"
  mkdir -p "$root"
  echo "debootstrap $SUITE from $(mirror)" >&2
  debootstrap --variant=minbase --include=ca-certificates,curl "$SUITE" "$root" "$(mirror)" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  # Smaller, and nothing in an image should try to start services.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import -c 'ENV LANG=C.UTF-8' - damselfly-base:$SUITE >/dev/null
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod +x "$root/usr/sbin/policy-rc.d"
  mount --bind /proc "$root/proc"
  trap 'umount "$root/proc" 2>/dev/null || true' EXIT
  chroot "$root" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends docker-registry redis-server >/dev/null
  chroot "$root" apt-get clean
  umount "$root/proc"
  trap - EXIT
  rm -rf "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import -c 'ENV LANG=C.UTF-8' - damselfly-services:$SUITE >/dev/null
  rm -rf "$root"
}

if [ "${REBUILD_BASE:-0}" = 1 ] || ! docker image inspect damselfly-base:$SUITE >/dev/null 2>&1 \
  || ! docker image inspect damselfly-services:$SUITE >/dev/null 2>&1; then
  build_bases
fi

if [ "$PROFILE" = release ]; then
  cargo build --release --locked -p damselfly-edge -p damselfly-agent -p damselfly-preheater
else
  cargo build --locked -p damselfly-edge -p damselfly-agent -p damselfly-preheater
fi

context="$work/context"
rm -rf "$context"
mkdir -p "$context/bin"
for bin in edge-cache peer-agent preheater; do
  # A hard link where possible: the context is sent to the daemon, not copied on disk.
  ln -f "$target/$PROFILE/$bin" "$context/bin/$bin" 2>/dev/null || cp "$target/$PROFILE/$bin" "$context/bin/$bin"
done
cp deploy/docker/healthcheck "$context/bin/damselfly-healthcheck"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
# Host network for the RUN step: it needs no network at all, and hosts without a docker0
# bridge (--bridge=none) cannot give it the default one.
docker build -q --network host -f deploy/docker/Dockerfile -t "damselfly:$version" -t damselfly:latest \
  --build-arg VERSION="$version" "$context" >/dev/null
rm -rf "$context"
echo "built damselfly:$version (damselfly:latest) from $PROFILE binaries"
