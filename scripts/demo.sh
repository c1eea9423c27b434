#!/usr/bin/env bash
# Runs the demo. With a Docker Engine: the compose appliance (registry, preheater, edge, Redis,
# three agents in two racks); a push goes through the preheater's webhook, the edge is warm
# before the first agent pulls, and each pull prints where its bytes came from. Without Docker:
# a registry, an edge and four agents on loopback (bench demo), pulled by skopeo and containerd.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/install-deps.sh
if docker info >/dev/null 2>&1 && command -v docker-compose >/dev/null; then
  deploy/compose/up.sh
  exec deploy/compose/demo.sh
fi
echo "no Docker Engine: the loopback demo (no preheater)" >&2
cargo build --release --locked --bins
exec target/release/bench demo
