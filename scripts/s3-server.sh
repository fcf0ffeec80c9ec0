#!/usr/bin/env bash
# A local S3 API on 127.0.0.1 (moto's server mode) to try evidence sync to object storage without a cloud
# account. The tests start the same server from Python (tests/services.py: s3_server).
#
#   scripts/s3-server.sh [PORT] [BUCKET]        defaults: 9000, lineguard-evidence; Ctrl-C stops it
#
# Then, in the station config:
#   evidence:
#     sync_url: s3://lineguard-evidence/plant-a
#     sync_endpoint: http://127.0.0.1:9000
#     sync_key_id: local                        # moto takes any key id and secret;
#     sync_secret_file: station-data/s3.secret  # a file with one line, chmod 600
# and read the records back with: LINEGUARD_S3_ENDPOINT=http://127.0.0.1:9000 AWS_ACCESS_KEY_ID=local \
#   AWS_SECRET_ACCESS_KEY=x lineguard drift-report --evidence s3://lineguard-evidence/plant-a ...
# Its data lives in the process: stopping it loses the bucket.
set -euo pipefail
PORT=${1:-9000}
BUCKET=${2:-lineguard-evidence}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
"$PY" -c "import moto.server" 2>/dev/null || { echo "moto is not installed in $PY (pip install 'moto[server]')" >&2; exit 2; }
"$PY" -m moto.server -H 127.0.0.1 -p "$PORT" &
PID=$!
trap 'kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null' EXIT INT TERM
for _ in $(seq 1 150); do
  if "$PY" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/moto-api/', timeout=1)" 2>/dev/null; then
    break
  fi
  kill -0 "$PID" 2>/dev/null || { echo "moto server exited (port $PORT taken?)" >&2; exit 1; }
  sleep 0.2
done
"$PY" -c "import urllib.request; urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:$PORT/$BUCKET', method='PUT'), timeout=5)"
echo "S3 API on http://127.0.0.1:$PORT, bucket $BUCKET (pid $PID); Ctrl-C stops it"
wait "$PID"
