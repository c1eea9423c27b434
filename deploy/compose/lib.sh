# Helpers for demo.sh and the appliance test: push, wait for the warm, pull through an agent,
# read metrics. Sourced from a script that ran `cd deploy/compose`; .env must exist (up.sh).
# shellcheck shell=bash disable=SC1091
set -a
. ./.env
set +a
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-damselfly}"
REGISTRY="127.0.0.1:${DF_REGISTRY_PORT:-15000}"
PREHEATER="https://127.0.0.1:${DF_PREHEATER_PORT:-15070}"
EDGE="https://127.0.0.1:${DF_EDGE_PORT:-15080}"
# The appliance's CA (up.sh made it): the edge and the preheater serve TLS.
CA="state/pki/ca/ca.crt"
WORK="${WORK:-state/work}"
mkdir -p "$WORK"

# Port of agent NAME's mirror on this host.
agent_port() {
  case "$1" in
    agent-a1) echo "${DF_AGENT_A1_PORT:-15091}" ;;
    agent-a2) echo "${DF_AGENT_A2_PORT:-15092}" ;;
    agent-b1) echo "${DF_AGENT_B1_PORT:-15093}" ;;
  esac
}

# push LOCAL_DOCKER_IMAGE REPO:TAG: copies an image of the local Docker Engine to the registry;
# prints the manifest digest.
push() {
  skopeo copy -q --dest-tls-verify=false --digestfile "$WORK/pushed.digest" \
    "docker-daemon:$1" "docker://$REGISTRY/$2" >/dev/null
  cat "$WORK/pushed.digest"
}

# Bytes of every blob (config and layers) of REPO:TAG.
image_bytes() {
  skopeo inspect --raw --tls-verify=false "docker://$REGISTRY/$1" \
    | python3 -c 'import json,sys; m=json.load(sys.stdin); print(m["config"]["size"]+sum(l["size"] for l in m["layers"]))'
}

# wait_warm REPO TAG: until the preheater's job for that tag succeeded; prints the seconds.
wait_warm() {
  local start=$SECONDS state
  for _ in $(seq 1 240); do
    state=$(curl -fsS --cacert "$CA" -H "Authorization: Bearer $DF_API_TOKEN" "$PREHEATER/api/v1/jobs?limit=100" | python3 -c '
import json, sys
repo, tag = sys.argv[1], sys.argv[2]
for job in json.load(sys.stdin)["jobs"]:
    t = job.get("target", {})
    if job.get("repository") == repo and t.get("kind") == "image" and t.get("reference") == tag:
        print(job["state"]); break
' "$1" "$2" || true)
    case "$state" in
      succeeded) echo $((SECONDS - start)); return 0 ;;
      failed) echo "preheat of $1:$2 failed" >&2; return 1 ;;
    esac
    sleep 0.5
  done
  echo "preheat of $1:$2 did not finish in 120 s" >&2
  return 1
}

# pull_via AGENT REPO:TAG: skopeo pull with the agent as the registry's mirror; prints the
# manifest digest. skopeo would fall back to the registry quietly, so callers check the agent's
# metrics to see where the bytes came from.
pull_via() {
  local conf="$WORK/registries-$1.conf" out="$WORK/pull-$1"
  cat >"$conf" <<CONF
[[registry]]
prefix = "$REGISTRY"
location = "$REGISTRY"
insecure = true
[[registry.mirror]]
location = "127.0.0.1:$(agent_port "$1")"
insecure = true
CONF
  rm -rf "$out"
  skopeo --registries-conf "$conf" copy -q --src-tls-verify=false "docker://$REGISTRY/$2" "dir:$out" >/dev/null
  skopeo manifest-digest "$out/manifest.json"
}

# agent_bytes AGENT SOURCE: bytes the agent downloaded from peer, edge or origin.
agent_bytes() {
  docker-compose exec -T "$1" curl -fsS http://127.0.0.1:5092/metrics \
    | awk -v s="source=\"$2\"" '$1 ~ /^damselfly_agent_download_bytes_total/ && index($1, s) {sum += $2} END {printf "%d\n", sum}'
}

# Bytes the edge fetched from the origin.
edge_upstream_bytes() {
  curl -fsS --cacert "$CA" "$EDGE/metrics" | awk '$1 ~ /^damselfly_edge_upstream_bytes_total/ {sum += $2} END {printf "%d\n", sum}'
}

mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
