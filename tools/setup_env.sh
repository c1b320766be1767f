#!/usr/bin/env bash
# Create the project's virtualenv and install the CPU stack.
# Why a script and not pip alone: mmcv 2.1.0 ships only a source distribution and must be built
# with its compiled ops against the already-installed torch (no build isolation), which pip cannot
# express in a requirements file. pip caches the built wheel, so later runs take seconds.
set -euo pipefail
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
FLAVOUR=${FLAVOUR:-cpu}   # cpu | gpu
stamp="$VENV/.detrdistill-$FLAVOUR-installed"
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt constraints.txt ]; then
  exit 0
fi
# The tested versions (constraints.txt); the GPU flavour's CUDA packages are not in it, so it stays unpinned
if [ "$FLAVOUR" = cpu ]; then
  export PIP_CONSTRAINT="$PWD/constraints.txt"
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip "$@"; }
echo "[setup] base tools + torch 2.13.0 (CPU)"
pip install -q --upgrade pip
pip install -q "torch==2.13.0" numpy wheel ninja "setuptools<81"
if ! "$VENV/bin/python" -c "import mmcv.ops" 2>/dev/null; then
  echo "[setup] building mmcv 2.1.0 with ops from source (one time, about 8 minutes on 2 cores; pip caches the wheel)"
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} pip install -q --no-build-isolation "mmcv==2.1.0"
fi
echo "[setup] mmengine, mmdet and the project"
if [ "$FLAVOUR" = gpu ]; then
  pip install -q -e ".[dev,serve,gpu]"  # onnxruntime-gpu replaces onnxruntime
else
  pip install -q -e ".[dev,export,serve]"
fi
touch "$stamp"
echo "[setup] done: $VENV"
