"""``run_cohort``: every manifest case predicted as `predict` does, serially or on a Dask cluster.

The output folder holds ``cohort.json`` (what was run), ``cases/<patient>/`` (each case's `predict` outputs,
replaced atomically), ``status/<patient>.json`` (done or failed, its reason and fingerprint) and the summary
table. A rerun skips every case whose fingerprint is unchanged; failed cases are tried again. Each case's
arrays live only while it is predicted: workers return a few numbers, so memory stays flat over the cohort.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import InputError
from ..io.atomic import check_output_directory, write_text_atomic
from ..io.cohort import read_manifest
from .cases import CaseTask, fingerprint, is_finished, make_task, read_status, run_case
from .summary import write_summary

COHORT_FILE = "cohort.json"
# (cases finished, cases to run, the status of the case just finished; None once before the first case)
Progress = Callable[[int, int, "dict[str, Any] | None"], None]


@dataclass
class CohortRun:
    """What a run did: cases predicted now, skipped as finished earlier, failed, and the summary's rows."""

    predicted: list[str]
    skipped: list[str]
    failed: dict[str, str]  # patient id -> one-line reason
    patient_rows: int
    node_rows: int
    dicom: dict[str, dict[str, Any]]  # patient id -> its DICOM export record (with --dicom-export)


@contextlib.contextmanager
def dask_client(cluster: str) -> Iterator[Any]:
    """A Dask client for ``local`` / ``local:N`` (a LocalCluster of N single-threaded worker processes, default 2)
    or a scheduler address (``tcp://host:8786``)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise InputError(None, "--cluster needs Dask distributed: pip install 'lnmstaging[cluster]'") from None
    if cluster == "local" or cluster.startswith("local:"):
        text = cluster.partition(":")[2] or "2"
        if not text.isdigit() or int(text) < 1:
            raise InputError(None, f"--cluster local:N needs a positive number of workers, not {text!r}")
        # a local cluster's start/stop chatter (e.g. "worker still alive, killing" at shutdown) is not news
        logging.getLogger("distributed").setLevel(logging.ERROR)
        with LocalCluster(n_workers=int(text), threads_per_worker=1, processes=True, dashboard_address=None) as local, \
                Client(local) as client:
            yield client
        return
    try:
        client = Client(cluster, timeout=30)
    except (OSError, TimeoutError, ValueError) as error:
        raise InputError(cluster, f"cannot reach the Dask scheduler ({error})") from None
    with client:
        yield client


def _run_serial(tasks: list[CaseTask], progress: Progress | None) -> Iterator[dict[str, Any]]:
    for index, task in enumerate(tasks, start=1):
        status = run_case(task)
        if progress:
            progress(index, len(tasks), status)
        yield status


def _run_dask(tasks: list[CaseTask], client: Any, progress: Progress | None) -> Iterator[dict[str, Any]]:
    from distributed import as_completed

    # pure=False: a case is a side effect (its folder), never a cached result; the run token keeps two runs
    # on one shared scheduler from sharing task keys
    token = uuid.uuid4().hex[:12]
    futures = client.map(run_case, tasks, pure=False, key=[f"lnmstaging-case-{token}-{t.patient_id}" for t in tasks])
    for index, future in enumerate(as_completed(futures), start=1):
        status = future.result()
        future.release()  # nothing of a finished case stays on the cluster
        if progress:
            progress(index, len(tasks), status)
        yield status


def run_cohort(manifest: str | Path, out_dir: str | Path, model: str | Path | None = None, *,
               split_islands: bool = False, preset: str | None = None, dicom_export: bool = False,
               cluster: str | None = None, client: Any = None, progress: Progress | None = None,
               allow_out_of_domain: bool = False) -> CohortRun:
    """Predict every case of ``manifest`` into ``out_dir``.

    Args:
        manifest: the cohort manifest CSV (the training commands' format; n_stage optional).
        out_dir: output folder: absent, empty, or an earlier run's (holding cohort.json); never another folder.
        model: bundle folder or installed name (default bundle when None).
        split_islands, preset: as for `predict`.
        dicom_export: write DICOM SEG + SR for cases whose image is a DICOM series.
        cluster: ``local[:N]`` or a Dask scheduler address; None = serial in this process.
        client: an existing ``distributed.Client`` to use instead of ``cluster``.
        progress: called after every case with (done, total, status).
        allow_out_of_domain: predict cases outside the bundle's input domain (with the warning) instead of failing them.

    Returns:
        The :class:`CohortRun`.
    """
    from ..bundle import load_bundle
    from ..prediction.pipeline import torch_threads

    # the run folder is added to by name, never replaced whole: only each case folder follows the listing rule
    out_dir = check_output_directory(out_dir, COHORT_FILE, replaced_whole=False)
    entries = read_manifest(manifest)
    with torch_threads():  # single-threaded, as `predict` loads a bundle
        bundle = load_bundle(model)  # checks the bundle once here; its manifest checksum enters every fingerprint
    options = {"split_islands": split_islands, "preset": preset, "dicom_export": dicom_export,
               "allow_out_of_domain": allow_out_of_domain}
    tasks = [make_task(entry, out_dir, str(bundle.path), bundle.manifest_sha256, **options) for entry in entries]
    folders = [Path(t.folder).name for t in tasks]
    if len(set(folders)) != len(folders):
        raise InputError(manifest, "two patient ids map to the same output folder name")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / COHORT_FILE, json.dumps({
        "format": "lnmstaging-cohort-run", "lnmstaging_version": __version__, "manifest": str(Path(manifest).resolve()),
        "model": {"name": bundle.name, "path": str(bundle.path), "manifest_sha256": bundle.manifest_sha256},
        "options": options, "patients": len(tasks), "research_use_only": True,
    }, indent=2) + "\n")
    del bundle  # workers load their own copy; this process keeps no model while the cases run

    pending, skipped = [], []
    for task in tasks:
        (skipped if is_finished(task, fingerprint(task)) else pending).append(task)
    predicted, failed = [], {}
    if progress:
        progress(0, len(pending), None)
    with contextlib.ExitStack() as stack:
        if client is None and cluster and pending:  # nothing to do: no cluster to start
            client = stack.enter_context(dask_client(cluster))
        statuses = _run_dask(pending, client, progress) if client is not None else _run_serial(pending, progress)
        for status in statuses:
            if status["status"] == "done":
                predicted.append(status["patient_id"])
            else:
                failed[status["patient_id"]] = status["reason"]
    patient_rows, node_rows = write_summary(tasks, out_dir)
    dicom = {}
    for task in tasks:
        record = (read_status(task) or {}).get("dicom")
        if dicom_export and isinstance(record, dict):
            dicom[task.patient_id] = record
    return CohortRun(predicted, [t.patient_id for t in skipped], failed, patient_rows, node_rows, dicom)
