#!/usr/bin/env bash
# Join one more Ray node on this machine to the head that cluster/start_local_head.sh
# started (B2_RAY_HEAD_DIR, or the directory given): free ports, its own temp dir, the
# head's token. Returns once the head lists the node as alive, so a job submitted next
# already sees its resources. A small multi-node cluster on one machine:
#   eval "$(B2_RAY_JOINABLE=1 RAY_NUM_GPUS=1 bash cluster/start_local_head.sh)"
#   RAY_NUM_CPUS=2 RAY_NUM_GPUS=1 bash cluster/start_local_worker.sh
#   bash cluster/stop_local_head.sh          # ends the head and the nodes joined to it
# RAY_NUM_CPUS (default 4) and RAY_NUM_GPUS (default: the GPUs Ray detects) size the node;
# GPUs may be logical ones, as here, for placement on a machine without GPUs.
# Addresses: Ray turns 127.0.0.1 (--node-ip-address, --address) into the machine's own
# address so that nodes reach each other, as on the joinable head; token authentication
# guards those ports.
set -euo pipefail
PYTHON="${PYTHON:-python3}"
HEAD_DIR="${1:-${B2_RAY_HEAD_DIR:-}}"
if [ -z "$HEAD_DIR" ] || [ ! -s "$HEAD_DIR/pgid" ]; then
  echo "error: no head to join: pass the directory start_local_head.sh printed," \
    "or set B2_RAY_HEAD_DIR" >&2
  exit 2
fi
if [ ! -s "$HEAD_DIR/gcs_address" ]; then
  echo "error: the head in $HEAD_DIR listens on 127.0.0.1 only, where no node can join:" \
    "start it with B2_RAY_JOINABLE=1" >&2
  exit 2
fi
GCS_ADDRESS="$(cat "$HEAD_DIR/gcs_address")"
TOKEN_FILE="${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}"
if [ ! -s "$TOKEN_FILE" ]; then
  echo "error: no Ray token in $TOKEN_FILE: the head's token is needed to join it" >&2
  exit 2
fi
export RAY_AUTH_MODE=token
RAY_AUTH_TOKEN="$(cat "$TOKEN_FILE")"
export RAY_AUTH_TOKEN
export RAY_USAGE_STATS_ENABLED=0
# `ray start --address` refuses to join a node where this is 0 (its default on Linux is 1)
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1

# Unix socket paths must stay short: a temp dir directly under /tmp.
NODE_DIR="$(mktemp -d /tmp/b2ray-XXXXXX)"
read -r NODE_MANAGER OBJECT_MANAGER AGENT AGENT_GRPC RUNTIME_ENV METRICS < <("$PYTHON" - <<'PY'
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
for s in socks:
    s.close()
PY
)

# setsid: every process of this node shares one process group, which the stop script ends
# `ray start` retries an unreachable head for ever: bounded here
timeout "${RAY_HEAD_WAIT_S:-120}" setsid ray start --address="$GCS_ADDRESS" \
  --node-ip-address=127.0.0.1 \
  --node-manager-port="$NODE_MANAGER" --object-manager-port="$OBJECT_MANAGER" \
  --dashboard-agent-listen-port="$AGENT" --dashboard-agent-grpc-port="$AGENT_GRPC" \
  --runtime-env-agent-port="$RUNTIME_ENV" --metrics-export-port="$METRICS" \
  --temp-dir="$NODE_DIR" --num-cpus="${RAY_NUM_CPUS:-4}" --disable-usage-stats \
  ${RAY_NUM_GPUS:+--num-gpus="$RAY_NUM_GPUS"} \
  > "$NODE_DIR/start.log" 2>&1 < /dev/null || {
  echo "error: ray start failed to join $GCS_ADDRESS; its output: $NODE_DIR/start.log" >&2
  tail -n 5 "$NODE_DIR/start.log" >&2
  exit 1
}
RAYLET_PID="$(pgrep -f "raylet.*$NODE_DIR" | head -n 1)"
ps -o pgid= -p "$RAYLET_PID" | tr -d ' ' > "$NODE_DIR/pgid"
# the head's stop script ends the nodes listed here with the head
echo "$NODE_DIR" >> "$HEAD_DIR/nodes"

# Wait until the head lists this node (found by its temp dir) as alive.
if ! NODE_ID="$("$PYTHON" - "$GCS_ADDRESS" "$NODE_DIR" "${RAY_HEAD_WAIT_S:-120}" <<'PY'
import sys, time
from ray._raylet import GcsClient
from ray.core.generated.gcs_pb2 import GcsNodeInfo

client = GcsClient(address=sys.argv[1])
deadline = time.monotonic() + float(sys.argv[3])
while time.monotonic() < deadline:
    nodes = client.get_all_node_info(state_filter=GcsNodeInfo.GcsNodeState.ALIVE)
    for node_id, info in nodes.items():
        if info.temp_dir == sys.argv[2]:
            print(node_id.hex())
            sys.exit(0)
    time.sleep(0.5)
sys.exit(1)
PY
)"; then
  echo "error: the node did not join the head within ${RAY_HEAD_WAIT_S:-120} s;" \
    "logs: $NODE_DIR" >&2
  kill -TERM -- "-$(cat "$NODE_DIR/pgid")" 2>/dev/null || true
  exit 1
fi
echo "$NODE_ID" > "$NODE_DIR/node_id"
echo "Ray node $NODE_ID joined the head at $GCS_ADDRESS, files $NODE_DIR" >&2
echo "export B2_RAY_NODE_DIR=$NODE_DIR"
