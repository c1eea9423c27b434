#!/usr/bin/env bash
# Fuzzes every parser that reads bytes from the network (fuzz/, docs/fuzzing.md): each target for
# FUZZ_SECONDS (default 30), from its seeds in fuzz/corpus/<target>/. Fails on the first crash and
# prints the input that caused it and how to replay it; prints the executions of every target.
#
#   scripts/fuzz.sh                      # every target, 30 s each
#   FUZZ_SECONDS=300 scripts/fuzz.sh wire tickets
#
# Works on the stable toolchain (no sanitizer: the project forbids unsafe code). Installs
# cargo-fuzz when it is missing. New inputs found on the way go to fuzz/target/corpus/<target>/,
# never into the repository's seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_INCREMENTAL=0
seconds="${FUZZ_SECONDS:-30}"

# libfuzzer-sys builds libFuzzer, which is C++.
if ! command -v c++ >/dev/null; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends g++ >/dev/null
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --version 0.13.2
fi

cd fuzz
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi
# --dev: opt-level 1 (fuzz/Cargo.toml); a release build takes minutes longer on two cores.
flags=(--dev --sanitizer none)
cargo fuzz build "${flags[@]}"

mkdir -p target/fuzz-logs
summary=()
for target in "${targets[@]}"; do
    found="target/corpus/$target"
    log="target/fuzz-logs/$target.log"
    mkdir -p "$found" "artifacts/$target"
    # -timeout: one input taking 10 s is a hang; -rss_limit_mb: memory one input may take.
    if ! cargo fuzz run "${flags[@]}" "$target" "$found" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -dict=dict/damselfly.dict -artifact_prefix="artifacts/$target/" >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz: $target failed; the input is in fuzz/artifacts/$target/ (log: fuzz/$log)." >&2
        echo "fuzz: replay with: cd fuzz && cargo fuzz run ${flags[*]} $target artifacts/$target/<file>" >&2
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    inputs=$(find "$found" -type f | wc -l)
    summary+=("$(printf '%-16s %12s executions in %ss, %s inputs in fuzz/%s' \
        "$target" "${runs:-?}" "$seconds" "$inputs" "$found")")
done
printf 'fuzz: %s\n' "${summary[@]}"
echo "fuzz: ${#targets[@]} targets, no crash"
