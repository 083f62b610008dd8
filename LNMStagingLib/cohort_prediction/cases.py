"""One cohort case as a unit of work: its folder name, its fingerprint, and predicting it as `predict` does.

A case is redone exactly when its fingerprint changes: the SHA-256 of its input files (every file of a
DICOM series folder), the bundle's manifest checksum (which covers every model file) and the options that
change the result (clinical values, --split-islands, --preset, --dicom-export).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..bundle import sha256_file
from ..errors import LNMStagingError
from ..io.atomic import write_text_atomic
from ..io.cohort import ClinicalData, CohortEntry

CASES_DIR = "cases"
STATUS_DIR = "status"
FINGERPRINT_VERSION = 1
_SAFE = re.compile(r"[^A-Za-z0-9._-]")
# A loaded bundle per worker thread: a model is not safe to share between threads (Grad-CAM's backward
# passes on one shared model collide: seen with a threaded Dask LocalCluster), so each thread has its own.
_LOCAL = threading.local()


def case_folder_name(patient_id: str) -> str:
    """A file-system-safe folder name for a patient id; ids that had to be changed get a short hash so that
    two ids never share a folder."""
    safe = _SAFE.sub("_", patient_id).strip("._") or "case"
    if safe != patient_id:
        safe += "-" + hashlib.sha256(patient_id.encode("utf-8")).hexdigest()[:8]
    return safe


def input_files(path: Path) -> list[Path]:
    """The files an input consists of: the file itself, or every file of a (DICOM series) folder."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return [path]


@dataclass(frozen=True)
class CaseTask:
    """Everything a worker needs for one case (small and picklable: no arrays)."""

    patient_id: str
    image: str
    segmentation: str
    clinical: ClinicalData
    label: int | None
    folder: str  # absolute path of the case's output folder
    status_file: str
    model: str  # bundle folder
    bundle_sha256: str
    split_islands: bool = False
    preset: str | None = None
    dicom_export: bool = False
    allow_out_of_domain: bool = False

    def options(self) -> dict[str, Any]:
        return {"split_islands": self.split_islands, "preset": self.preset, "dicom_export": self.dicom_export,
                "clinical": asdict(self.clinical), "allow_out_of_domain": self.allow_out_of_domain}


def fingerprint(task: CaseTask) -> str:
    """SHA-256 over the case's input file contents, the bundle manifest checksum and the options.

    Missing input files are left out here; predicting the case then fails with its own one-line reason.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps({"version": FINGERPRINT_VERSION, "bundle": task.bundle_sha256,
                              "options": task.options()}, sort_keys=True).encode("utf-8"))
    for role, source in (("image", Path(task.image)), ("segmentation", Path(task.segmentation))):
        if not source.exists():
            digest.update(f"{role}:absent".encode())
            continue
        for file in input_files(source):
            relative = file.relative_to(source).as_posix() if source.is_dir() else file.name
            digest.update(f"{role}:{relative}:{sha256_file(file)}".encode())
    return digest.hexdigest()


def make_task(entry: CohortEntry, out_dir: Path, model: str, bundle_sha256: str, **options: Any) -> CaseTask:
    name = case_folder_name(entry.patient_id)
    # absolute paths: a cluster's workers need not share this process's working folder
    return CaseTask(entry.patient_id, os.path.abspath(entry.image), os.path.abspath(entry.segmentation),
                    entry.clinical, entry.label,
                    str(out_dir / CASES_DIR / name), str(out_dir / STATUS_DIR / f"{name}.json"), model, bundle_sha256,
                    **options)


def read_status(task: CaseTask) -> dict[str, Any] | None:
    path = Path(task.status_file)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_finished(task: CaseTask, case_fingerprint: str) -> bool:
    """Done earlier with the same inputs, model and options, and its report is still there."""
    status = read_status(task)
    return bool(status and status.get("status") == "done" and status.get("fingerprint") == case_fingerprint
                and (Path(task.folder) / "report.json").is_file())


def _bundle(model: str, sha256: str) -> Any:
    from ..bundle import load_bundle
    from ..prediction.pipeline import torch_threads

    key = (model, sha256)
    if getattr(_LOCAL, "key", None) != key:
        _LOCAL.bundle = None  # one model at a time: a thread never holds several
        with torch_threads():  # as `predict` loads it: single-threaded loading was 5x faster on 2 cores
            _LOCAL.bundle, _LOCAL.key = load_bundle(model), key
    return _LOCAL.bundle


def _predict(task: CaseTask) -> dict[str, Any]:
    from ..errors import BundleError
    from ..imaging.case import load_case
    from ..prediction import check_intended_input, image_modality, predict_case, write_outputs

    bundle = _bundle(task.model, task.bundle_sha256)
    if bundle.manifest_sha256 != task.bundle_sha256:
        raise BundleError(task.model, "the bundle changed while the cohort was running")
    case = load_case(task.image, task.segmentation, split_islands=task.split_islands)
    check_intended_input(bundle, task.preset, image_modality(task.image))
    result = predict_case(case, task.clinical, bundle=bundle, allow_out_of_domain=task.allow_out_of_domain)
    write_outputs(result, case, task.folder)
    info: dict[str, Any] = {"n_nodes": len(result.nodes), "patient_probability": result.patient.probability}
    if task.dicom_export:
        from ..export.dicom import export_case

        try:
            info["dicom"] = export_case(Path(task.folder), case=case)
        except LNMStagingError as error:  # the prediction stands; only its export failed
            info["dicom"] = {"written": False, "reason": f"DICOM export failed: {error}"}
    return info


def run_case(task: CaseTask) -> dict[str, Any]:
    """Predict one case into its folder and record its status; a failure is recorded with its one-line
    reason and returned, never raised, so the other cases go on. Returns the (small) status record."""
    case_fingerprint = fingerprint(task)
    status: dict[str, Any] = {"patient_id": task.patient_id, "fingerprint": case_fingerprint,
                              "folder": Path(task.folder).name, "lnmstaging_version": __version__}
    try:
        status.update(_predict(task), status="done", reason="")
    except LNMStagingError as error:
        status.update(status="failed", reason=str(error))
    except Exception as error:  # noqa: BLE001  (any other failure of one case must not stop the cohort)
        first = (str(error).strip().splitlines() or [""])[0]
        status.update(status="failed", reason=f"{type(error).__name__}: {first}" if first else type(error).__name__)
    write_text_atomic(task.status_file, json.dumps(status, indent=2) + "\n")
    return status
