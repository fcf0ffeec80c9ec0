#!/usr/bin/env bash
# The test suite, as CI runs it (.ci/run calls exactly this):
#   1. set up .venv (pipeline + dev) and run every test there (slow ones included);
#   2. install ONLY the station extra into .venv-station and run the serving tests there,
#      against the bundle step 1 built: proof that a station needs no training stack.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Debian's Chromium for the operator-page browser test (Playwright cannot download its own here),
# and Debian's ffmpeg to serve a live camera stream to the station's camera tests
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v ffmpeg >/dev/null 2>&1 || missing="$missing ffmpeg"
if [ -n "$missing" ]; then
  echo "installing Debian packages for the browser and camera tests:$missing"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

export LINEGUARD_TEST_BUNDLE="$PWD/.lineguard/test-bundle" LINEGUARD_TEST_DETECTOR="$PWD/.lineguard/test-detector"
export HF_HUB_OFFLINE=1 DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT=true
export PREFECT_HOME="$PWD/.lineguard/prefect" PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120 MPLCONFIGDIR="$PWD/.lineguard/matplotlib"
export LINEGUARD_ORT_CACHE="$PWD/.lineguard/ort-cache"  # optimised graphs, per machine (serving/engine/backends.py)

echo "== full suite (.venv) =="
.venv/bin/python -m pytest "$@"

echo "== serving tests in a station-only venv (.venv-station: the 'station' extra, no torch) =="
if [ ! -x .venv-station/bin/python ]; then python3 -m venv .venv-station; fi
.venv-station/bin/python -m pip install -q --upgrade pip
.venv-station/bin/python -m pip install -q -c constraints.txt -e ".[station,dev]"
# an editable install leaves the station's own modules uncompiled, and with PYTHONDONTWRITEBYTECODE set every
# station start compiles them again (~65 ms of a cold start here); a wheel install ships them compiled
.venv-station/bin/python -m compileall -q serving
.venv-station/bin/python -P - <<'PY'
import importlib.util, sys
heavy = [m for m in ("torch", "anomalib", "mlflow", "prefect", "dvc", "timm") if importlib.util.find_spec(m)]
sys.exit(f"station venv has training packages installed: {heavy}") if heavy else print("station venv: no training packages installed")
PY
.venv-station/bin/python -m pytest tests/serving -p no:cacheprovider
