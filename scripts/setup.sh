#!/usr/bin/env bash
# Set up Lineguard in ./.venv from a clean clone: Python deps (pinned by constraints.txt),
# torch from the machine's local wheel store, and nothing downloaded at run time.
# Idempotent: a stamp skips the install when pyproject.toml and constraints.txt are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
EXTRAS=${LINEGUARD_EXTRAS:-pipeline,dev}
stamp="$VENV/.lineguard-installed"
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)-$EXTRAS

# Label Studio in a venv of its own: its pins (Django, pydantic, numpy...) clash with the pipeline's.
LS_VERSION=1.23.2
ls_stamp=.venv-labelstudio/.lineguard-installed
if [ "${LINEGUARD_SKIP_LABEL_STUDIO:-0}" != 1 ] && { [ ! -f "$ls_stamp" ] || [ "$(cat "$ls_stamp")" != "$LS_VERSION" ]; }; then
  echo "setup: installing Label Studio $LS_VERSION into .venv-labelstudio (about 2 min, 1 GB)"
  [ -x .venv-labelstudio/bin/python ] || "$PY" -m venv .venv-labelstudio
  PIP_DISABLE_PIP_VERSION_CHECK=1 .venv-labelstudio/bin/python -m pip install -q "label-studio==$LS_VERSION"
  echo "$LS_VERSION" > "$ls_stamp"
fi

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/lineguard" ]; then
  echo "setup: $VENV is up to date"
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$VENV/bin/python" -m pip install -q --upgrade pip "setuptools>=77" wheel
# torch first, on its own: pip takes the 2.14.1 wheels from this machine's disk (uv/poetry would download GBs).
echo "setup: installing torch (about 2 min on a fresh machine)"
"$VENV/bin/python" -m pip install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
echo "setup: installing the pipeline (about 5 min on a fresh machine)"
"$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[$EXTRAS]"
# ultralytics pulls opencv-python, which unpacks into the same cv2/ as the headless build the rest uses:
# keep one cv2/, the headless one (ENVIRONMENT.md); pip check then reports ultralytics' missing opencv-python.
if "$VENV/bin/python" -m pip show -q opencv-python >/dev/null 2>&1; then
  "$VENV/bin/python" -m pip uninstall -q -y opencv-python opencv-python-headless
  "$VENV/bin/python" -m pip install -q --no-deps opencv-python-headless==4.12.0.88
fi
"$VENV/bin/python" -m pip check || echo "setup: pip check reported the issues above (see ENVIRONMENT notes)"
echo "$want" > "$stamp"
echo "setup: done ($VENV)"
