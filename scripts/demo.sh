#!/usr/bin/env bash
# The main job on the bundled default: writes the synthetic phantom case and runs LNMStaging on it.
# Output: out/demo/ (nodes.csv; with a bundled model also report.json, report.html, gradcam.nrrd, traversal/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${1:-out/demo}
.venv/bin/lnmstaging phantom "$OUT/phantom"
.venv/bin/lnmstaging measure "$OUT/phantom/image.nrrd" "$OUT/phantom/segmentation.seg.nrrd" --out "$OUT/nodes.csv"
if .venv/bin/lnmstaging predict --help >/dev/null 2>&1 && [ -n "$(.venv/bin/lnmstaging models --json 2>/dev/null | grep '"default": true')" ]; then
  .venv/bin/lnmstaging predict "$OUT/phantom/image.nrrd" "$OUT/phantom/segmentation.seg.nrrd" --age 64 --sex M --t-stage T3 --out "$OUT/prediction"
  echo "Report: $OUT/prediction/report.html"
fi
