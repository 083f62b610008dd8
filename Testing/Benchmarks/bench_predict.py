"""Benchmark: `predict` on a 512 x 512 x 40 MRI phantom with 15 nodes, Grad-CAM and traversals included
(target: <= 3 s wall after imports on 2 CPU cores).

Run:  .venv/bin/python Testing/Benchmarks/bench_predict.py [--repeats 3] [--model DIR]
Model: ``--model``, else the default bundle when one is installed, else the tiny test bundle (trained first,
~30 s, not timed); the output says which. Timed separately, as a user waits for them:
* model load: verifying the bundle's checksums and loading the weights (once per session in Slicer);
* inference: reading image + segmentation, the preset, measurements, patches, node and patient
  probabilities, Grad-CAM, traversals, criteria, and writing report.json, gradcam.nrrd, traversal/ and
  report.html.
The first run (cold: first autograd pass, first convolutions) and the median of the repeats are printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

started = time.perf_counter()
import monai.visualize  # noqa: E402, F401
import torch  # noqa: E402

from LNMStagingLib.bundle import default_bundle_path, load_bundle  # noqa: E402
from LNMStagingLib.errors import BundleError  # noqa: E402
from LNMStagingLib.imaging.case import load_case  # noqa: E402
from LNMStagingLib.prediction import predict_case, write_outputs  # noqa: E402
from LNMStagingLib.synthetic.phantom import write_phantom  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - started
TARGET_SECONDS = 3.0


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def choose_model(given: str | None, scratch: Path) -> tuple[Path, str]:
    if given:
        return Path(given), "given with --model"
    try:
        return default_bundle_path(), "the default bundle"
    except BundleError:
        from LNMStagingLib.training.tiny import build_tiny_bundle

        return build_tiny_bundle(scratch / "tiny"), "the tiny test bundle (no default bundle installed)"


def run_once(bundle_path: Path, files, out: Path) -> dict[str, float]:
    clock = time.perf_counter()
    bundle = load_bundle(bundle_path)
    load = time.perf_counter() - clock
    clock = time.perf_counter()
    case = load_case(files.image, files.segmentation)
    result = predict_case(case, bundle=bundle)
    write_outputs(result, case, out)
    inference = time.perf_counter() - clock
    t = result.timings
    return {"model_load": load, "inference": inference, "nodes": len(result.nodes), "preprocessing": t.preprocessing_s,
            "probabilities": t.inference_s, "gradcam": t.gradcam_s, "traversal": t.traversal_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", help="bundle folder (default: the default bundle, else the tiny test bundle)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        files = write_phantom(scratch / "phantom", size=(512, 512, 40), spacing=(0.5, 0.5, 3.3), extra_nodes=8, seed=0)
        bundle_path, which = choose_model(args.model, scratch)
        runs = [run_once(bundle_path, files, scratch / f"out{index}") for index in range(args.repeats + 1)]
    cold, warm = runs[0], runs[1:]

    def median(key: str) -> float:
        return statistics.median(run[key] for run in warm)

    bundle = load_bundle(bundle_path)
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPU cores, torch {torch.__version__} with {torch.get_num_threads()} "
          f"threads, Python {platform.python_version()}, load average {os.getloadavg()[0]:.2f}")
    print(f"model: {bundle.name} {bundle.version} ({which}), {bundle.n_members} ensemble members")
    print(f"case: 512 x 512 x 40 phantom (0.5 x 0.5 x 3.3 mm), {cold['nodes']} nodes; imports {IMPORT_SECONDS:.2f} s (not counted)")
    for label, run in (("first run", cold), (f"median of {len(warm)}", {k: median(k) for k in cold})):
        total = run["model_load"] + run["inference"]
        print(f"{label}: model load {run['model_load']:.2f} s, inference {run['inference']:.2f} s "
              f"(preprocessing {run['preprocessing']:.2f}, probabilities {run['probabilities']:.2f}, "
              f"Grad-CAM {run['gradcam']:.2f}, traversals {run['traversal']:.2f}; rest is reading and writing), "
              f"total {total:.2f} s")
    total = cold["model_load"] + cold["inference"]
    verdict = "PASS" if total <= TARGET_SECONDS else "FAIL"
    print(f"first run, model load + inference: {total:.2f} s (target <= {TARGET_SECONDS:.0f} s after imports): {verdict}")
    return 0 if total <= TARGET_SECONDS else 1


if __name__ == "__main__":
    raise SystemExit(main())
