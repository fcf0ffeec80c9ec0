#!/usr/bin/env bash
# The main job on the embedded default: set up, then enroll ELPV mono cells end to end
# (Prefect flow: prepare -> enroll -> calibrate -> export -> evaluate -> register -> lean replay).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/lineguard demo "$@"
