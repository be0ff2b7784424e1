#!/usr/bin/env bash
# Start a Ray head on this machine, bound to loopback, with token authentication kept on.
# Prints the exports that `ray job submit` (and `ray stop`) need in the same shell:
#   eval "$(bash cluster/start_local_head.sh)"
#   ray job submit --address http://127.0.0.1:8265 --runtime-env cluster/runtime_env.yaml \
#       --working-dir . -- python -m learner.main --set stages=2
set -euo pipefail
TOKEN_FILE="${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}"
mkdir -p "$(dirname "$TOKEN_FILE")"
if [ ! -s "$TOKEN_FILE" ]; then
  umask 077
  python3 -c 'import secrets; print(secrets.token_hex(32))' > "$TOKEN_FILE"
fi
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN="$(cat "$TOKEN_FILE")"
export RAY_USAGE_STATS_ENABLED=0
ray start --head --node-ip-address=127.0.0.1 --dashboard-host=127.0.0.1 \
  --num-cpus="${RAY_NUM_CPUS:-4}" --disable-usage-stats >&2
# the token itself is not printed: the exports read it from the file
echo "export RAY_AUTH_MODE=token RAY_USAGE_STATS_ENABLED=0"
echo "export RAY_AUTH_TOKEN=\"\$(cat '$TOKEN_FILE')\""
echo "export RAY_ADDRESS=http://127.0.0.1:8265"
