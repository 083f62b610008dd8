"""Reader of the rectal cancer T2 node-read data set (``../shared/data/rectal-t2-nodes``, see its SOURCE.md).

Two CSV files: ``patients.csv`` (one row per patient: age, sex, therapy, pathological N status) and
``t2_nodes.csv`` (one row per node seen on T2 MRI: short axis and the radiologist's shape, border,
homogeneity and signal reads). The reads become :class:`~LNMStagingLib.imaging.criteria.NodeReads`, the
same objects ``predict`` derives from measurements, so both go through the same criteria function.

Study: Lurz M, Schaefer AO. The Avocado Sign: a novel imaging marker for nodal staging in rectal cancer.
Eur Radiol 2025. doi:10.1007/s00330-025-11462-y.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..imaging.criteria import NodeReads

STUDY = ("Lurz M, Schaefer AO. The Avocado Sign: a novel imaging marker for nodal staging in rectal cancer. "
         "Eur Radiol 2025. doi:10.1007/s00330-025-11462-y")
THERAPIES = ("surgeryAlone", "neoadjuvantTherapy")
COHORTS = ("all", *THERAPIES)
_SHAPES = {"round": True, "oval": False}
_BORDERS = {"irregular": True, "sharp": False}
_HOMOGENEITY = {"heterogeneous": True, "homogeneous": False}
_SIGNALS = {"lowSignal": "low", "intermediateSignal": "intermediate", "highSignal": "high", "": None}
PATIENT_COLUMNS = ("patient_id", "age", "sex", "therapy", "n_status")
NODE_COLUMNS = ("patient_id", "node_index", "short_axis_mm", "shape", "border", "homogeneity", "signal")


@dataclass
class RectalPatient:
    """One patient: clinical inputs, the pathological N status (1 = pN+) and the T2 nodes' reads."""

    patient_id: str
    age: float
    sex: str  # "m" / "f"
    therapy: str  # "surgeryAlone" / "neoadjuvantTherapy"
    n_status: int
    nodes: list[NodeReads] = field(default_factory=list)

    def in_cohort(self, cohort: str) -> bool:
        """Whether the patient belongs to cohort ``all``, ``surgeryAlone`` or ``neoadjuvantTherapy``."""
        return cohort == "all" or self.therapy == cohort


def _rows(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise InputError(path, "not found (the rectal-t2-nodes layout has patients.csv and t2_nodes.csv)")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(path, f"missing column(s) {', '.join(missing)}")
            return list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(path, f"cannot read as CSV ({error})") from None


def _choice(path: Path, line: int, column: str, value: str, choices: dict):
    if value not in choices:
        allowed = ", ".join(repr(k) for k in choices)
        raise InputError(path, f"line {line}: {column} {value!r} is not one of {allowed}")
    return choices[value]


def _number(path: Path, line: int, column: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise InputError(path, f"line {line}: {column} {value!r} is not a number")
    return number


def load_rectal(folder: str | Path) -> list[RectalPatient]:
    """Read the data set.

    Args:
        folder: the folder holding ``patients.csv`` and ``t2_nodes.csv``.

    Returns:
        The patients in file order, each with its nodes in the file's order.

    Raises:
        InputError: a file is missing or a row cannot be used (the message names the file and the line).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "data folder not found")
    patients_csv, nodes_csv = folder / "patients.csv", folder / "t2_nodes.csv"
    patients: dict[str, RectalPatient] = {}
    for line, row in enumerate(_rows(patients_csv, PATIENT_COLUMNS), start=2):
        pid = row["patient_id"].strip()
        if not pid or pid in patients:
            raise InputError(patients_csv, f"line {line}: patient_id {pid!r} is empty or repeated")
        patients[pid] = RectalPatient(
            patient_id=pid, age=_number(patients_csv, line, "age", row["age"]),
            sex=_choice(patients_csv, line, "sex", row["sex"], {"m": "m", "f": "f"}),
            therapy=_choice(patients_csv, line, "therapy", row["therapy"], {t: t for t in THERAPIES}),
            n_status=_choice(patients_csv, line, "n_status", row["n_status"], {"0": 0, "1": 1}),
        )
    for line, row in enumerate(_rows(nodes_csv, NODE_COLUMNS), start=2):
        patient = patients.get(row["patient_id"].strip())
        if patient is None:
            raise InputError(nodes_csv, f"line {line}: patient_id {row['patient_id']!r} is not in {patients_csv.name}")
        short = _number(nodes_csv, line, "short_axis_mm", row["short_axis_mm"])
        if short <= 0:
            raise InputError(nodes_csv, f"line {line}: short_axis_mm {short:g} is not positive")
        patient.nodes.append(NodeReads(
            short_axis_mm=short,
            round=_choice(nodes_csv, line, "shape", row["shape"], _SHAPES),
            irregular_border=_choice(nodes_csv, line, "border", row["border"], _BORDERS),
            heterogeneous=_choice(nodes_csv, line, "homogeneity", row["homogeneity"], _HOMOGENEITY),
            signal=_choice(nodes_csv, line, "signal", row["signal"].strip(), _SIGNALS),
        ))
    if len({p.n_status for p in patients.values()}) < 2:
        raise InputError(patients_csv, "needs pN+ and pN0 patients")
    return list(patients.values())


RECTAL_ENV = "LNMSTAGING_RECTAL_DIR"


def default_rectal_dir() -> Path:
    """``$LNMSTAGING_RECTAL_DIR`` or ``<repository>/../shared/data/rectal-t2-nodes``."""
    import os

    env = os.environ.get(RECTAL_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "rectal-t2-nodes"
