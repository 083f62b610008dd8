"""The rectal T2 node-read benchmarks as ``lnmstaging benchmark`` sub-commands: ``criteria`` (the
radiological criteria sets) and ``rectal-features`` (a learned node-feature model against ESGAR)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path


def register_rectal_benchmarks(sub, command_line: Callable[[], str]) -> None:
    """Add ``criteria`` and ``rectal-features`` to the ``benchmark`` sub-parsers.

    Args:
        sub: the ``benchmark`` group's sub-parsers.
        command_line: gives the command line as typed (recorded in the outputs).
    """
    b = sub.add_parser("criteria", help="radiological criteria sets (ESGAR 2016 and others) per patient on the "
                                        "rectal T2 node reads")
    b.add_argument("--data", type=Path, required=True, help="the rectal-t2-nodes folder (patients.csv, t2_nodes.csv)")
    b.add_argument("--out", type=Path, required=True, help="output folder: criteria.json and criteria.md")
    b.set_defaults(handler=lambda args: _criteria(args, command_line()))

    b = sub.add_parser("rectal-features", help="node-feature MIL head and logistic regression vs ESGAR, repeated "
                                               "nested patient-grouped CV on the rectal T2 node reads")
    b.add_argument("--data", type=Path, required=True, help="the rectal-t2-nodes folder")
    b.add_argument("--out", type=Path, required=True, help="output folder: features.json, features.md, figures")
    b.add_argument("--repeats", type=int, default=5, help="repeats of the outer cross-validation")
    b.add_argument("--folds", type=int, default=5, help="outer folds")
    b.add_argument("--inner", type=int, default=3, help="inner folds (choose hyperparameters, epochs, threshold)")
    b.add_argument("--bootstrap", type=int, default=2000, help="paired bootstrap resamples of patients")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--threads", type=int, default=1)
    b.add_argument("--quick", action="store_true", help="tiny settings (for trying the command)")
    b.set_defaults(handler=lambda args: _features(args, command_line()))


def _criteria(args, command: str) -> int:
    from ..evaluation.criteria_benchmark import run_criteria_benchmark

    t0 = time.time()
    path = run_criteria_benchmark(args.data, args.out, command)
    print(path.read_text(encoding="utf-8"))
    print(f"criteria benchmark finished in {time.time() - t0:.1f} s: {path}")
    return 0


def _features(args, command: str) -> int:
    from ..errors import InputError
    from ..evaluation.rectal_features import FeatureBenchmarkConfig, run_feature_benchmark

    if args.repeats < 1 or args.folds < 2 or args.inner < 2 or args.bootstrap < 100:
        raise InputError(None, "--repeats >= 1, --folds >= 2, --inner >= 2 and --bootstrap >= 100 are needed")
    config = FeatureBenchmarkConfig(repeats=args.repeats, outer=args.folds, inner=args.inner,
                                    n_boot=args.bootstrap, seed=args.seed, quick=args.quick)
    t0 = time.time()
    path = run_feature_benchmark(args.data, args.out, config, command, threads=args.threads)
    print(path.read_text(encoding="utf-8"))
    print(f"rectal feature benchmark finished in {(time.time() - t0) / 60:.1f} min: {path}")
    return 0
