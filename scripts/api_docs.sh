#!/usr/bin/env bash
# The API reference, generated from the library's docstrings with pdoc: writes docs/api/ (not committed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${1:-docs/api}
.venv/bin/pdoc --docformat google --output-directory "$OUT" LNMStagingLib
echo "API reference: $OUT/index.html"
