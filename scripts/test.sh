#!/usr/bin/env bash
# Runs every check CI runs: formatting, lints, and the whole test suite (unit tests and the
# integration tests that start real docker-registry, skopeo and containerd processes).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Two test binaries at a time: each integration test starts registries and clients of its own,
# and this project's machines have two cores.
cargo test --workspace --locked -- --test-threads=2
# Every parser that reads the network, fuzzed for a bounded time from the seeds in fuzz/corpus
# (docs/fuzzing.md); fails on any crash.
FUZZ_SECONDS=20 scripts/fuzz.sh
# The image, the compose appliance, the Helm chart and the systemd units (needs root and Docker;
# starts dockerd when it is not running).
scripts/test-deploy.sh
