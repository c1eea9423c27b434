#!/usr/bin/env bash
# deploy/'s tests (run by scripts/test.sh after the Rust tests, whose binaries they reuse):
# builds the image from the debug binaries, runs the compose appliance with the real Docker
# Engine, checks the Helm chart against the image, and verifies the systemd units.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/install-deps.sh --deploy
target="${CARGO_TARGET_DIR:-target}"
PROFILE=debug timeout 900 deploy/docker/build.sh
timeout 900 deploy/test/compose.sh
timeout 600 "$target/deploy-venv/bin/python" deploy/test/chart.py
BIN_DIR="$target/debug" timeout 300 deploy/test/systemd.sh
