#!/usr/bin/env bash
# The appliance's demo (after up.sh): pushes a Debian image to the registry, whose notification
# makes the preheater warm the edge; then pulls it through an agent in each rack and prints where
# every agent's bytes came from.
set -euo pipefail
cd "$(dirname "$0")"
[ -f .env ] || { echo "run up.sh first" >&2; exit 1; }
. ./lib.sh
repo=demo/debian tag="v$(date +%s)"
echo "pushing damselfly-base:bookworm as $REGISTRY/$repo:$tag"
digest=$(push damselfly-base:bookworm "$repo:$tag")
size=$(image_bytes "$repo:$tag")
echo "  manifest $digest, $(mib "$size") of blobs"
echo "preheater: warming the edge from the registry's notification"
echo "  edge warm after $(wait_warm "$repo" "$tag") s, before any pull"
printf '\n%-9s %-8s %12s %12s %12s  %s\n' agent rack "from peers" "from edge" "from origin" digest
for agent in agent-a1 agent-b1 agent-a2; do
  before=()
  for s in peer edge origin; do before+=("$(agent_bytes "$agent" "$s")"); done
  got=$(pull_via "$agent" "$repo:$tag")
  row=()
  i=0
  for s in peer edge origin; do row+=("$(mib $(( $(agent_bytes "$agent" "$s") - before[i] )))"); i=$((i + 1)); done
  [ "$got" = "$digest" ] && same=matches || same="DIFFERS: $got"
  printf '%-9s %-8s %12s %12s %12s  %s\n' "$agent" "$( [ "$agent" = agent-b1 ] && echo rack-b || echo rack-a )" "${row[@]}" "$same"
done
echo
echo "origin sent $(mib "$(edge_upstream_bytes)") to the edge in total (the image is $(mib "$size"))"
