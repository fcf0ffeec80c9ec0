#!/usr/bin/env bash
# Replay demo of the station with no camera: the held-out ELPV cells through the bundle from
# scripts/demo.sh, against the project's Modbus PLC simulator on 127.0.0.1:5020.
# Prints each part's verdict and reject pulse; the operator page is at http://127.0.0.1:8000/
# while it runs (log in as operator/operator).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[ -f models/elpv/bundle/manifest.json ] || .venv/bin/lineguard demo
[ -f station-data/evidence.key ] || .venv/bin/lineguard-station gen-key station-data/evidence.key
mkdir -p station-data
rm -f station-data/plc-edges.jsonl
.venv/bin/lineguard-station plc-sim --port 5020 --edges station-data/plc-edges.jsonl > station-data/plc-sim.log 2>&1 &
PLC_PID=$!
trap 'kill $PLC_PID 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q listening station-data/plc-sim.log 2>/dev/null && break; sleep 0.1; done
.venv/bin/lineguard-station run --config station.example.yaml --demo --max-frames "${FRAMES:-40}" --exit-when-done "$@"
.venv/bin/python - <<'PY'
from serving.lineio.plcsim import read_edges
edges = read_edges("station-data/plc-edges.jsonl")
on = [e for e in edges if e["kind"] == "coil" and e["address"] == 0 and e["values"][0]]
res = [e for e in edges if e["kind"] == "hr" and e["address"] == 0]
print(f"PLC saw {len(res)} results (sequence, verdict) and {len(on)} reject pulses; edge log: station-data/plc-edges.jsonl")
PY
