"""Benchmark: `lnmstaging predict` as a user runs it, the whole process from launch to exit, measured side by
side with `python -c "import torch"` in the same run (ratios, not absolute times: the machine is shared).

Run:  .venv/bin/python Testing/Benchmarks/bench_predict_process.py [--repeats 3] [--skip-large] [--work DIR]
          [--baseline OTHER/.venv/bin/python]

Cases (the synthetic phantom, 7 fixed + seeded extra nodes, written once into ``--work`` or a temporary folder):
* ``base``: 512 x 512 x 40 (0.5 x 0.5 x 3.3 mm), 15 nodes;
* ``nodes100``: the same image size with 100 nodes;
* ``large``: 1024 x 1024 x 200 (0.25 x 0.25 x 0.66 mm, the same field of view), 15 nodes.
Each repeat runs, in turn, `import torch` and every case (interleaved, so that a change in the machine's load
touches all alike); the medians are compared. Memory is the child's own peak resident set (``os.wait4``).
Targets (issue 15): base <= 1.5x import torch; nodes100 <= 1.3x base; large <= 4x base and < 2 GB peak.
Prints one line per figure and per target (PASS/FAIL); exit code 0 only when every target passes.
``--baseline`` also runs every case with another checkout's interpreter (its own `lnmstaging`, e.g. main's
before a change), interleaved with this one's in every repeat, and prints its figures and ratios beside them.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CASES = {
    # name: (size (i, j, k), spacing (i, j, k) mm, extra nodes beyond the phantom's 7)
    "base": ((512, 512, 40), (0.5, 0.5, 3.3), 8),
    "nodes100": ((512, 512, 40), (0.5, 0.5, 3.3), 93),
    "large": ((1024, 1024, 200), (0.25, 0.25, 0.66), 8),
}
GIB = 1024**3


@dataclass
class Run:
    seconds: float
    peak_rss_bytes: int
    returncode: int


def timed_child(command: list[str]) -> Run:
    """Wall time from launch to exit and the child's peak resident set (its own, via ``wait4``)."""
    with tempfile.TemporaryFile() as stderr:  # a file, not a pipe: a chatty child never blocks
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        child.returncode = code = os.waitstatus_to_exitcode(status)
        if code != 0:
            stderr.seek(0)
            message = stderr.read().decode(errors="replace").strip()[-2000:]
            raise SystemExit(f"{' '.join(command)} failed ({code}): {message}")
    return Run(seconds, int(usage.ru_maxrss) * 1024, code)  # ru_maxrss is in KiB on Linux


def lnmstaging_command(python: str = sys.executable) -> list[str]:
    """The installed console script beside ``python`` (what a user launches), else ``python -m``."""
    script = Path(python).with_name("lnmstaging")
    return [str(script)] if script.is_file() else [python, "-m", "LNMStagingLib"]


def write_cases(work: Path, names: list[str]) -> dict[str, Path]:
    """Write each case's phantom once (kept in ``work`` between runs when it is given).

    Written by a child process: Linux counts the parent's peak memory at fork into a child's ``ru_maxrss``,
    so this process must stay small for the children's peaks to be their own.
    """
    folders = {}
    for name in names:
        folder = work / name
        if not (folder / "segmentation.seg.nrrd").is_file():
            size, spacing, extra = CASES[name]
            print(f"writing the {name} phantom ({size[0]} x {size[1]} x {size[2]}, {7 + extra} nodes)...", flush=True)
            code = ("from LNMStagingLib.synthetic.phantom import write_phantom; "
                    f"write_phantom({str(folder)!r}, size={size}, spacing={spacing}, extra_nodes={extra}, seed=0)")
            subprocess.run([sys.executable, "-c", code], check=True)
        folders[name] = folder
    return folders


def import_profile(command: list[str], top: int = 8) -> list[str]:
    """The slowest top-level imports of one predict run (``python -X importtime``, cumulative)."""
    env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1")
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    rows = []
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line[len("import time:"):].split("|")
            # a top-level import has one space before its name; nested ones are indented further
            if cumulative.strip().isdigit() and name.startswith(" ") and not name.startswith("  "):
                rows.append((int(cumulative), name.strip()))
    rows.sort(reverse=True)
    return [f"{name} {microseconds / 1e6:.2f} s" for microseconds, name in rows[:top]]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-large", action="store_true", help="leave out the 1024 x 1024 x 200 case")
    parser.add_argument("--work", type=Path, help="keep the phantoms here between runs (default: a temporary folder)")
    parser.add_argument("--imports", action="store_true", help="also list the slowest imports of the base case")
    parser.add_argument("--baseline", help="another checkout's Python: its `lnmstaging` runs every case too, "
                        "interleaved, and its figures are printed beside (before/after a change)")
    args = parser.parse_args()
    names = [name for name in CASES if not (args.skip_large and name == "large")]
    scratch = tempfile.TemporaryDirectory()
    work = args.work or Path(scratch.name)
    folders = write_cases(work, names)
    outputs = Path(scratch.name) / "outputs"
    commands = {"": lnmstaging_command()}
    if args.baseline:
        commands["baseline "] = lnmstaging_command(args.baseline)

    def predict(name: str, prefix: str = "") -> list[str]:
        folder, out = folders[name], outputs / (prefix.strip() or "this") / name
        shutil.rmtree(out, ignore_errors=True)  # our own output of the previous repeat
        return commands[prefix] + ["predict", str(folder / "image.nrrd"), str(folder / "segmentation.seg.nrrd"),
                                   "--quiet", "--out", str(out)]

    for prefix in commands:
        timed_child(predict("base", prefix))  # warm-up: the file cache, compiled bytecode
    labels = [prefix + name for prefix in commands for name in names]
    runs: dict[str, list[Run]] = {name: [] for name in ["import torch", *labels]}
    load = os.getloadavg()[0]
    for _ in range(args.repeats):
        runs["import torch"].append(timed_child([sys.executable, "-c", "import torch"]))
        for name in names:
            for prefix in commands:
                runs[prefix + name].append(timed_child(predict(name, prefix)))
    load = max(load, os.getloadavg()[0])
    seconds = {name: statistics.median(r.seconds for r in items) for name, items in runs.items()}
    peak = {name: max(r.peak_rss_bytes for r in items) for name, items in runs.items()}
    from importlib.metadata import version  # not `import torch`: this process stays small (see write_cases)

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {version('torch')}, Python "
          f"{platform.python_version()}, load average up to {load:.2f} during the runs")
    print(f"median of {args.repeats} interleaved runs, launch to exit; peak = the child's max RSS")
    for name, value in seconds.items():
        print(f"  {name:21s} {value:6.2f} s   peak {peak[name] / GIB:5.2f} GiB")
    ok = True
    for prefix in reversed(commands):  # the baseline's figures first, for reading before/after
        checks = [("base / import torch", seconds[prefix + "base"] / seconds["import torch"], 1.5)]
        if "nodes100" in names:
            checks.append(("nodes100 / base", seconds[prefix + "nodes100"] / seconds[prefix + "base"], 1.3))
        if "large" in names:
            checks.append(("large / base", seconds[prefix + "large"] / seconds[prefix + "base"], 4.0))
        for label, ratio, target in checks:
            ok &= ratio <= target or bool(prefix)  # the baseline's figures are for comparison only
            print(f"{prefix}{label}: {ratio:.2f}x (target <= {target:g}x): {verdict(ratio <= target)}")
        if "large" in names:
            large = peak[prefix + "large"]
            ok &= large < 2 * GIB or bool(prefix)
            print(f"{prefix}large peak memory: {large / GIB:.2f} GiB (target < 2 GiB): {verdict(large < 2 * GIB)}")
    if args.imports:
        print("slowest imports of the base case (cumulative): " + ", ".join(import_profile(predict("base"))))
    scratch.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
