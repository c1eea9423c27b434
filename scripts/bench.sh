#!/usr/bin/env bash
# Runs a benchmark scenario (see bench/README.md): scripts/bench.sh edge [--image-mib N] ...
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/install-deps.sh
cargo build --release --locked --bins
exec target/release/bench "$@"
