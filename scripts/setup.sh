#!/usr/bin/env bash
# Creates .venv in the checkout: the CPU build of torch 2.13.0 first, then LNMStaging (editable) and its
# test tools, every package held to constraints.txt so nothing pulls another torch or CUDA.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
if ! .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet --retries 1 -c constraints.txt \
    --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
fi
if ! .venv/bin/python -c "import LNMStagingLib, slicer, pytest" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.lnmstaging-installed ] || [ constraints.txt -nt .venv/.lnmstaging-installed ]; then
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test]"
  touch .venv/.lnmstaging-installed
fi
.venv/bin/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
