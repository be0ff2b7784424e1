#!/usr/bin/env bash
# End the Ray head that cluster/start_local_head.sh started (B2_RAY_HEAD_DIR, or the
# directory given) with the nodes start_local_worker.sh joined to it, and nothing else:
# unlike `ray stop`, other Ray clusters on this machine keep running. Given a joined node's
# directory (B2_RAY_NODE_DIR), it ends that node only.
set -euo pipefail
HEAD_DIR="${1:-${B2_RAY_HEAD_DIR:-}}"
if [ -z "$HEAD_DIR" ] || [ ! -s "$HEAD_DIR/pgid" ]; then
  echo "error: no head to stop: pass the directory start_local_head.sh printed," \
    "or set B2_RAY_HEAD_DIR" >&2
  exit 2
fi

# The joined nodes and the head end together: TERM to every node's process group, up to
# 10 s for them to exit, then KILL; their files go with them.
DIRS=()
if [ -s "$HEAD_DIR/nodes" ]; then
  while read -r node; do
    [ -s "$node/pgid" ] && DIRS+=("$node")
  done < "$HEAD_DIR/nodes"
fi
DIRS+=("$HEAD_DIR")
PGIDS=()
for dir in "${DIRS[@]}"; do
  PGIDS+=("$(cat "$dir/pgid")")
done
for pgid in "${PGIDS[@]}"; do
  kill -TERM -- "-$pgid" 2>/dev/null || true
done
for _ in $(seq 1 40); do
  running=0
  for pgid in "${PGIDS[@]}"; do
    pgrep -g "$pgid" > /dev/null && running=1
  done
  [ "$running" = 0 ] && break
  sleep 0.25
done
for pgid in "${PGIDS[@]}"; do
  kill -KILL -- "-$pgid" 2>/dev/null || true
done
rm -rf "${DIRS[@]}"
echo "stopped the Ray node(s) in ${DIRS[*]}" >&2
