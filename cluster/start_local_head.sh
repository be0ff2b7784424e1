#!/usr/bin/env bash
# Start a private Ray head on this machine: dashboard on loopback, token authentication on,
# free ports and its own temp dir (so it runs beside any other Ray here), and returns only
# once the job agent accepts submissions. Prints the exports that `ray job submit` and
# cluster/stop_local_head.sh need in the same shell:
#   eval "$(bash cluster/start_local_head.sh)"
#   ray job submit --runtime-env cluster/runtime_env.yaml --working-dir . \
#       -- python -m learner.main --set stages=2 output_dir=$PWD/runs
#   bash cluster/stop_local_head.sh          # ends this head (and its worker nodes) only
# RAY_NUM_CPUS (default 4) and RAY_NUM_GPUS (default: the GPUs Ray detects) size the head;
# started with B2_RAY_JOINABLE=1, cluster/start_local_worker.sh joins more nodes to it.
set -euo pipefail
PYTHON="${PYTHON:-python3}"
TOKEN_FILE="${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}"
mkdir -p "$(dirname "$TOKEN_FILE")"
if [ ! -s "$TOKEN_FILE" ]; then
  (umask 077 && "$PYTHON" -c 'import secrets; print(secrets.token_hex(32))' > "$TOKEN_FILE")
fi
export RAY_AUTH_MODE=token
RAY_AUTH_TOKEN="$(cat "$TOKEN_FILE")"
export RAY_AUTH_TOKEN
export RAY_USAGE_STATS_ENABLED=0
# Ray turns --node-ip-address=127.0.0.1 into the machine's address and binds GCS, raylet and
# workers on all interfaces, unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: then every port
# stays on 127.0.0.1, but no other node can join (`ray start --address` refuses, and would
# turn 127.0.0.1 into the machine's address). B2_RAY_JOINABLE=1 keeps Ray's default, with
# token authentication guarding the ports, for cluster/start_local_worker.sh.
if [ "${B2_RAY_JOINABLE:-0}" = 1 ]; then
  export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1
else
  export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
fi

# Unix socket paths must stay short: a temp dir directly under /tmp.
HEAD_DIR="$(mktemp -d /tmp/b2ray-XXXXXX)"
read -r GCS DASH CLIENT AGENT AGENT_GRPC RUNTIME_ENV METRICS < <("$PYTHON" - <<'PY'
import socket
socks = [socket.socket() for _ in range(7)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
for s in socks:
    s.close()
PY
)

# setsid: every process of this head shares one process group, which the stop script ends
setsid ray start --head --node-ip-address=127.0.0.1 --dashboard-host=127.0.0.1 \
  --port="$GCS" --dashboard-port="$DASH" --ray-client-server-port="$CLIENT" \
  --dashboard-agent-listen-port="$AGENT" --dashboard-agent-grpc-port="$AGENT_GRPC" \
  --runtime-env-agent-port="$RUNTIME_ENV" --metrics-export-port="$METRICS" \
  --temp-dir="$HEAD_DIR" --num-cpus="${RAY_NUM_CPUS:-4}" --disable-usage-stats \
  ${RAY_NUM_GPUS:+--num-gpus="$RAY_NUM_GPUS"} \
  > "$HEAD_DIR/start.log" 2>&1 < /dev/null || {
  echo "error: ray start failed; its output: $HEAD_DIR/start.log" >&2
  tail -n 5 "$HEAD_DIR/start.log" >&2
  exit 1
}
GCS_PID="$(pgrep -f "gcs_server.*$HEAD_DIR" | head -n 1)"
ps -o pgid= -p "$GCS_PID" | tr -d ' ' > "$HEAD_DIR/pgid"
if [ "${B2_RAY_JOINABLE:-0}" = 1 ]; then
  echo "127.0.0.1:$GCS" > "$HEAD_DIR/gcs_address"  # where start_local_worker.sh joins
fi

# `ray start` returns before the dashboard agent has registered; a submission before then
# fails with "No available agent to submit job". Wait for the registration the job
# server looks up.
if ! "$PYTHON" - "127.0.0.1:$GCS" "${RAY_HEAD_WAIT_S:-120}" <<'PY'
import sys, time
from ray._raylet import GcsClient

client = GcsClient(address=sys.argv[1])
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    keys = client.internal_kv_keys(b"DASHBOARD_AGENT_ADDR_NODE_ID_PREFIX:", namespace=b"dashboard")
    if keys:
        sys.exit(0)
    time.sleep(0.5)
sys.exit(1)
PY
then
  echo "error: the Ray job agent did not start within ${RAY_HEAD_WAIT_S:-120} s;" \
    "logs: $HEAD_DIR" >&2
  kill -TERM -- "-$(cat "$HEAD_DIR/pgid")" 2>/dev/null || true
  exit 1
fi
echo "Ray head ready: dashboard http://127.0.0.1:$DASH, GCS 127.0.0.1:$GCS, files $HEAD_DIR" >&2
# the token itself is not printed: the exports read it from the file
echo "export RAY_AUTH_MODE=token RAY_USAGE_STATS_ENABLED=0"
echo "export RAY_AUTH_TOKEN=\"\$(cat '$TOKEN_FILE')\""
echo "export RAY_ADDRESS=http://127.0.0.1:$DASH B2_RAY_HEAD_DIR=$HEAD_DIR"
