#!/usr/bin/env bash
# End the Ray head that cluster/start_local_head.sh started (B2_RAY_HEAD_DIR, or the
# directory given), and nothing else: unlike `ray stop`, other Ray clusters on this machine
# keep running.
set -euo pipefail
HEAD_DIR="${1:-${B2_RAY_HEAD_DIR:-}}"
if [ -z "$HEAD_DIR" ] || [ ! -s "$HEAD_DIR/pgid" ]; then
  echo "error: no head to stop: pass the directory start_local_head.sh printed, or set B2_RAY_HEAD_DIR" >&2
  exit 2
fi
PGID="$(cat "$HEAD_DIR/pgid")"
kill -TERM -- "-$PGID" 2>/dev/null || true
for _ in $(seq 1 40); do
  pgrep -g "$PGID" > /dev/null || break
  sleep 0.25
done
kill -KILL -- "-$PGID" 2>/dev/null || true
rm -rf "$HEAD_DIR"
echo "stopped the Ray head in $HEAD_DIR" >&2
