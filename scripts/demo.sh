#!/usr/bin/env bash
# Runs the demo: a registry, an edge cache and four peer agents on loopback, a generated image
# pushed with skopeo, pulled through the agents by skopeo and containerd, with where each pull's
# bytes came from (origin, edge, rack neighbours).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/install-deps.sh
cargo build --release --locked --bins
exec target/release/bench demo
