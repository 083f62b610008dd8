"""How long the Slicer module's main thread is busy during a prediction, and what the child process costs.

Runs the module's logic headless (slicer-core scene, the phantom case, the default bundle) as the module does:
``startPrediction`` (export + start the child), then ``poll`` every 100 ms until the child ends, then
``finish`` (outputs into the scene). Side by side in the same run: ``lnmstaging predict`` on the same files
as its own process. Prints the main thread's longest single step (what would freeze the interface) and the
ratio of the module's wall time to the command's.

    .venv/bin/python Testing/Benchmarks/bench_slicer_child.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT / "LNMStaging", ROOT / "LNMStaging" / "Testing" / "Python"):
    sys.path.insert(0, str(path))

import LNMStagingScenarios as scenarios  # noqa: E402
from LNMStagingSlicerLib.logic import LNMStagingLogic, PredictionRequest  # noqa: E402
from LNMStagingSlicerLib.process import childEnvironment, libraryRoot  # noqa: E402


def once(folder: Path) -> dict[str, float]:
    context = scenarios.makeHeadlessScene()
    files = scenarios.writeTestCase(folder / "case")
    volumeNode = scenarios.loadVolume(context.scene, files.image)
    segmentationNode = scenarios.loadSegmentation(context.scene, files.segnrrd)
    logic = LNMStagingLogic()
    started = time.perf_counter()
    run = logic.startPrediction(volumeNode, segmentationNode, PredictionRequest(python=sys.executable))
    start_s = time.perf_counter() - started
    polls = []
    while run.running:
        time.sleep(0.1)  # the module's timer interval
        clock = time.perf_counter()
        run.poll()
        polls.append(time.perf_counter() - clock)
    clock = time.perf_counter()
    run.finish()
    finish_s = time.perf_counter() - clock
    module_s = time.perf_counter() - started
    clock = time.perf_counter()
    subprocess.run([sys.executable, "-m", "LNMStagingLib", "predict", str(files.image), str(files.segnrrd), "--quiet",
                    "--out", str(folder / "cli")], check=True, capture_output=True,
                   env=childEnvironment(os.environ, libraryRoot(), ownInterpreter=False))
    cli_s = time.perf_counter() - clock
    return {"start_s": start_s, "poll_max_s": max(polls), "finish_s": finish_s, "module_s": module_s, "cli_s": cli_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs = []
    for index in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder:
            runs.append(once(Path(folder)))
        print(f"run {index + 1}: " + ", ".join(f"{key} {value:.3f}" for key, value in runs[-1].items()))
    median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    longest = max(median["start_s"], median["poll_max_s"], median["finish_s"])
    print(f"median of {len(runs)}: main thread busy at most {longest:.3f} s in one step (start {median['start_s']:.3f} s, "
          f"longest poll {median['poll_max_s'] * 1000:.1f} ms, finish {median['finish_s']:.3f} s); "
          f"module wall {median['module_s']:.2f} s vs `lnmstaging predict` {median['cli_s']:.2f} s "
          f"(ratio {median['module_s'] / median['cli_s']:.2f}); load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
