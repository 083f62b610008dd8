#!/usr/bin/env bash
# Runs the LNMStaging module's self-test (LNMStagingTest: the scenarios of the headless pytest suite, on
# Slicer's own scene, plus the widget) inside a real 3D Slicer, without a main window.
#
#   SLICER_EXECUTABLE=/path/to/Slicer bash scripts/slicer_selftest.sh
#
# Supported: Slicer 5.10 and 5.12. The prediction scenarios run the prediction in a child process:
# LNMSTAGING_PYTHON=/path/to/.venv/bin/python uses an LNMStaging environment for it (nothing installed into
# Slicer); else Slicer's own Python, for which LNMSTAGING_SELFTEST_INSTALL=1 first installs
# Resources/requirements.txt (PyTorch itself comes from the PyTorch extension). Without either, those
# scenarios are skipped, with their reason.
# Without SLICER_EXECUTABLE it says why it skips and succeeds: the same scenarios run headless in
# Testing/Python/test_slicer_module.py (slicer-core), which scripts/test.sh runs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

if [ -z "${SLICER_EXECUTABLE:-}" ]; then
  echo "slicer_selftest: skipped: SLICER_EXECUTABLE is not set (point it at a 3D Slicer 5.10 or 5.12 executable to" \
       "run the module's self-test in the application; the same scenarios run headless in pytest)."
  exit 0
fi
if [ ! -x "$SLICER_EXECUTABLE" ]; then
  echo "slicer_selftest: error: SLICER_EXECUTABLE=$SLICER_EXECUTABLE is not an executable file" >&2
  exit 2
fi

if [ "${LNMSTAGING_SELFTEST_INSTALL:-0}" = "1" ]; then
  "$SLICER_EXECUTABLE" --launch PythonSlicer -m pip install -r "$ROOT/Resources/requirements.txt"
fi

# runUnitTest exits Slicer with 0 when every test passed, 1 otherwise.
exec "$SLICER_EXECUTABLE" --no-splash --no-main-window --testing --disable-cli-modules \
  --additional-module-paths "$ROOT/LNMStaging" \
  --python-code "import slicer.testing; slicer.testing.runUnitTest(['$ROOT/LNMStaging'], 'LNMStaging')"
