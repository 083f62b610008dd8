"""Benchmark: load + measure + cut patches for a 512 x 512 x 40 MRI with 15 nodes (target: < 2 s, 2 cores).

Run:  .venv/bin/python Testing/Benchmarks/bench_measure_patches.py [--repeats 5] [--preset mri-t2]
The phantom (7 fixed + 8 seeded extra nodes) is written once to a temporary folder; timed is what a user
waits for: reading image and segmentation from disk, canonical orientation, measuring every node and
cutting every patch. Prints the median and the worst of the repeats.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from LNMStagingLib.imaging.case import load_case, prepare_case
from LNMStagingLib.imaging.measure import measure_nodes
from LNMStagingLib.imaging.patches import extract_patches
from LNMStagingLib.imaging.presets import get_preset
from LNMStagingLib.synthetic.phantom import write_phantom

TARGET_SECONDS = 2.0


def run_once(files, preset_name: str | None) -> tuple[float, int, int]:
    start = time.perf_counter()
    case = load_case(files.image, files.segmentation)
    preset = get_preset(preset_name) if preset_name else None
    prepared = prepare_case(case, preset, intensity=preset_name not in (None, "mri-t2"))
    measurements = measure_nodes(prepared)
    patch_set = extract_patches(prepared)
    return time.perf_counter() - start, len(measurements), len(patch_set.patches)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--preset", default=None, help="also resample/normalise with a preset (e.g. mri-t2)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        files = write_phantom(Path(folder), size=(512, 512, 40), spacing=(0.5, 0.5, 3.3), extra_nodes=8, seed=0)
        run_once(files, args.preset)  # warm-up: imports and caches
        timings = []
        for _ in range(args.repeats):
            seconds, nodes, patches = run_once(files, args.preset)
            timings.append(seconds)
    median = statistics.median(timings)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}")
    print(f"case: 512 x 512 x 40 phantom, {nodes} nodes, {patches} patches, preset: {args.preset or 'none (native grid)'}")
    print(f"load + measure + patches: median {median:.3f} s, worst {max(timings):.3f} s over {args.repeats} runs "
          f"(target < {TARGET_SECONDS:.0f} s): {'PASS' if median < TARGET_SECONDS else 'FAIL'}")
    return 0 if median < TARGET_SECONDS else 1


if __name__ == "__main__":
    raise SystemExit(main())
