"""predict-cohort on N seeded phantom cases with the default bundle: wall time per case and the process's
resident memory after each case (flat over the cohort = no accumulation), then the resumed rerun's time.

Usage: .venv/bin/python Testing/Benchmarks/bench_predict_cohort.py [--cases 12] [--cluster local:2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import psutil

from LNMStagingLib.cohort_prediction import run_cohort
from LNMStagingLib.synthetic.phantom import write_phantom


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--cluster", help="local[:N] or a scheduler address (default: serial)")
    args = parser.parse_args()
    process = psutil.Process()
    with tempfile.TemporaryDirectory() as root:
        root_path = Path(root)
        lines = ["patient_id,image,segmentation"]
        for index in range(args.cases):
            files = write_phantom(root_path / f"case{index:03d}", size=(256, 256, 32), extra_nodes=index % 4, seed=index)
            lines.append(f"case{index:03d},{files.image},{files.segmentation}")
        (root_path / "manifest.csv").write_text("\n".join(lines) + "\n")
        rss, stamps = [], []

        def progress(done: int, total: int, status: dict | None) -> None:
            stamps.append(time.perf_counter())
            if status is not None:
                rss.append(process.memory_info().rss / 2**20)

        started = time.perf_counter()
        run = run_cohort(root_path / "manifest.csv", root_path / "out", cluster=args.cluster, progress=progress)
        total = time.perf_counter() - started
        per_case = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
        print(f"{len(run.predicted)} predicted, {len(run.failed)} failed in {total:.1f} s "
              f"(first case {per_case[0]:.2f} s incl. imports, model load or worker start; median per case {statistics.median(per_case):.2f} s)")
        print("RSS MiB after each case: " + ", ".join(f"{value:.0f}" for value in rss))
        half = len(rss) // 2
        print(f"RSS peak over cases 1-{half}: {max(rss[:half]):.0f} MiB; over cases {half + 1}-{len(rss)}: "
              f"{max(rss[half:]):.0f} MiB")
        clock = time.perf_counter()
        again = run_cohort(root_path / "manifest.csv", root_path / "out", cluster=args.cluster)
        print(f"rerun: {len(again.skipped)} unchanged cases kept, {len(again.predicted)} predicted, "
              f"{time.perf_counter() - clock:.1f} s")


if __name__ == "__main__":
    main()
