#!/usr/bin/env bash
# The test command: sets up .venv when needed, lints, then runs the whole pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check LNMStagingLib LNMStaging Testing
.venv/bin/python -m pytest "$@"
