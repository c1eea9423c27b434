#!/usr/bin/env bash
# The compose appliance with the real Docker Engine: push to the registry container, pull
# through two agents in different racks (networks), digests match, the origin sent each byte
# once (1.00x); then `docker kill` the edge in the middle of a pull: the pull still completes.
# Needs the images (deploy/docker/build.sh), Docker, docker-compose and skopeo. Bounded: every
# wait has a limit, and the appliance is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/../compose"
export COMPOSE_PROJECT_NAME="dmsf-test-$$"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export DF_REGISTRY_PORT=$(free_port) DF_EDGE_PORT=$(free_port) DF_PREHEATER_PORT=$(free_port)
export DF_AGENT_A1_PORT=$(free_port) DF_AGENT_A2_PORT=$(free_port) DF_AGENT_B1_PORT=$(free_port)
# Slow enough (edge to agents) that the edge can be killed while a pull is under way.
export DF_EDGE_PIECE_RATE_LIMIT=16MiB
# A project of its own: state (tokens, .env) in a scratch copy of the directory.
scratch="$(mktemp -d "${TMPDIR:-/tmp}/dmsf-compose-XXXXXX")"
cp -r docker-compose.yml config registry.yml.in up.sh lib.sh "$scratch/"
cd "$scratch"
passed=0 failed=0
check() { # check NAME CONDITION...
  local name=$1; shift
  if "$@"; then echo "ok: $name"; passed=$((passed + 1)); else echo "FAILED: $name"; failed=$((failed + 1)); fi
}
cleanup() {
  local rc=$?
  # Bounded too: a wedged engine must not hold the test past its own limit.
  [ "$failed" -eq 0 ] && [ "$rc" -eq 0 ] || timeout 60 docker-compose logs --tail 40 2>&1 | tail -160
  timeout 120 docker-compose down -v --remove-orphans >/dev/null 2>&1 || true
  cd / && rm -rf "$scratch"
}
trap cleanup EXIT
timeout 300 ./up.sh
. ./lib.sh

digest=$(push damselfly-base:bookworm demo/debian:v1)
size=$(image_bytes demo/debian:v1)
timeout 150 bash -c ". ./lib.sh; wait_warm demo/debian v1" >/dev/null
a1=$(timeout 300 bash -c ". ./lib.sh; pull_via agent-a1 demo/debian:v1")
b1=$(timeout 300 bash -c ". ./lib.sh; pull_via agent-b1 demo/debian:v1")
check "rack-a agent pulls the pushed manifest" test "$a1" = "$digest"
check "rack-b agent pulls the pushed manifest" test "$b1" = "$digest"
through() { echo $(( $(agent_bytes "$1" peer) + $(agent_bytes "$1" edge) )); }
check "both pulls came through the agents" test "$(through agent-a1)" -ge "$size" -a "$(through agent-b1)" -ge "$size"
origin=$(( $(edge_upstream_bytes) + $(agent_bytes agent-a1 origin) + $(agent_bytes agent-b1 origin) ))
ratio=$(awk -v o="$origin" -v s="$size" 'BEGIN {printf "%.2f", o / s}')
echo "origin bytes: ${ratio}x the image ($origin of $size)"
check "the origin sent each byte once (1.00x)" test "$ratio" = 1.00

# The edge dies while agent-a2 pulls a second image (warm at the edge, paced to the agent).
digest2=$(push damselfly-services:bookworm demo/services:v1)
timeout 150 bash -c ". ./lib.sh; wait_warm demo/services v1" >/dev/null
timeout 300 bash -c ". ./lib.sh; pull_via agent-a2 demo/services:v1" >"$WORK/a2.digest" &
pull=$!
for _ in $(seq 1 200); do
  [ "$(agent_bytes agent-a2 edge)" -gt 0 ] && break
  sleep 0.05
done
docker kill "$(docker-compose ps -q edge)" >/dev/null
echo "edge killed with $(mib "$(agent_bytes agent-a2 edge)") at agent-a2"
wait "$pull" && a2=$(cat "$WORK/a2.digest") || a2="pull failed"
check "the pull completes without the edge" test "$a2" = "$digest2"
check "the rest came from the origin" test "$(agent_bytes agent-a2 origin)" -gt 0

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
