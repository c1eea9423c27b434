#!/usr/bin/env bash
# The systemd units: `systemd-analyze verify` in a scratch root holding the binaries and the
# system's unit files (where systemd-analyze exists), then each unit's ExecStart with the
# example config it would read from /etc/damselfly, under --check-config.
#   BIN_DIR   where the binaries are (default target/debug)
set -euo pipefail
root_dir="$(cd "$(dirname "$0")/../.." && pwd)"
units="$root_dir/deploy/systemd"
bin_dir="${BIN_DIR:-${CARGO_TARGET_DIR:-$root_dir/target}/debug}"
passed=0 failed=0
check() { # check NAME COMMAND...
  local name=$1; shift
  local out
  if out=$("$@" 2>&1); then echo "ok: $name"; passed=$((passed + 1)); else echo "FAILED: $name"; echo "$out"; failed=$((failed + 1)); fi
}
scratch="$(mktemp -d "${TMPDIR:-/tmp}/dmsf-systemd-XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

if command -v systemd-analyze >/dev/null && [ -d /usr/lib/systemd/system ]; then
  mkdir -p "$scratch/root/usr/local/bin" "$scratch/root/etc/systemd/system" "$scratch/root/bin" "$scratch/root/usr/lib/systemd"
  for b in edge-cache peer-agent preheater; do ln "$bin_dir/$b" "$scratch/root/usr/local/bin/$b" 2>/dev/null || cp "$bin_dir/$b" "$scratch/root/usr/local/bin/"; done
  cp /bin/sh "$scratch/root/bin/sh"
  cp -r /usr/lib/systemd/system "$scratch/root/usr/lib/systemd/"
  cp "$units"/*.service "$scratch/root/etc/systemd/system/"
  for unit in "$units"/*.service; do
    unit_name=$(basename "$unit")
    # Any output (an unknown key, a bad value, a missing binary) is a failure.
    verify() { local out; out=$(systemd-analyze verify --root="$scratch/root" "$unit_name" 2>&1); [ -z "$out" ] || { echo "$out"; return 1; }; }
    check "systemd-analyze verify $unit_name" verify
  done
else
  echo "systemd-analyze is not available: units are checked through their ExecStart only"
fi

# The examples' certificates, made as docs/security.md says, in a scratch /etc/damselfly: each
# example is checked as written, with only that prefix moved.
etc="$scratch/etc-damselfly"
"$bin_dir/edge-cache" certs init --dir "$etc/ca" >/dev/null
for name in edge node preheater; do
  "$bin_dir/edge-cache" certs issue --ca "$etc/ca" --name "$name" --dns "$name.internal" --out "$etc/tls" >/dev/null
done

for unit in "$units"/*.service; do
  read -r -a exec_start <<<"$(sed -n 's/^ExecStart=//p' "$unit")"
  binary=$(basename "${exec_start[0]}")
  config="$scratch/$binary.toml"
  sed "s|/etc/damselfly/|$etc/|g" "$units/examples/$binary.toml" >"$config"
  check "$(basename "$unit"): ExecStart with /etc/damselfly/$binary.toml --check-config" \
    env -i "$bin_dir/$binary" "${exec_start[@]:1}" --config "$config" --check-config
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
