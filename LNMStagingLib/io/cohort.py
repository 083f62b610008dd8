"""Cohort manifests: one CSV row per patient (patient_id, image, segmentation, age, sex, t_stage, n_stage).

Relative paths are taken from the manifest's folder. Missing clinical values stay None (declared missing),
never 0. ``n_stage`` is the label when known: N0 -> 0, N1/N2 (any suffix) -> 1.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

REQUIRED_COLUMNS = ("patient_id", "image", "segmentation")
OPTIONAL_COLUMNS = ("age", "sex", "t_stage", "n_stage")
T_STAGES = ("T1", "T2", "T3", "T4")
MISSING_WORDS = frozenset({"", "na", "n/a", "nan", "none", "unknown", "missing", "?"})


def _given(value: object) -> str | None:
    """The stripped text of a clinical value, or None when it is absent or says it is missing."""
    if value is None or str(value).strip().lower() in MISSING_WORDS:
        return None
    return str(value).strip()


@dataclass(frozen=True)
class ClinicalData:
    """Patient clinical data; None = missing (the models see an explicit missingness indicator)."""

    age: float | None = None
    sex: str | None = None  # "F" or "M"
    t_stage: str | None = None  # "T1".."T4"

    def __post_init__(self) -> None:
        if self.age is not None and not 0 <= self.age <= 120:
            raise InputError(None, f"age {self.age} is outside 0-120")
        if self.sex is not None and self.sex not in ("F", "M"):
            raise InputError(None, f"sex must be F or M, not {self.sex!r}")
        if self.t_stage is not None and self.t_stage not in T_STAGES:
            raise InputError(None, f"T stage must be one of {', '.join(T_STAGES)}, not {self.t_stage!r}")

    @property
    def missing(self) -> list[str]:
        return [name for name in ("age", "sex", "t_stage") if getattr(self, name) is None]

    @classmethod
    def from_text(cls, age: object = None, sex: object = None, t_stage: object = None,
                  labels: tuple[str, str, str] = ("age", "sex", "T stage")) -> ClinicalData:
        """Clinical data as typed by a person (manifest cell, command-line option, Slicer field): absent or
        'unknown' values are missing (None), sex may be F/M/female/male, the T stage cT3/pT2b/... A value that
        cannot be read raises ValueError (or InputError) naming it with ``labels``."""
        age_text, sex_text, stage_text = _given(age), _given(sex), _given(t_stage)
        try:
            age_value = float(age_text) if age_text is not None else None
        except ValueError:
            raise ValueError(f"{labels[0]} must be a number of years, not {age!r}") from None
        sex_value = {"FEMALE": "F", "MALE": "M"}.get(sex_text.upper(), sex_text.upper()) if sex_text else None
        try:
            stage = parse_t_stage(stage_text)
        except ValueError as error:
            raise ValueError(f"{labels[2]}: {error}") from None
        return cls(age=age_value, sex=sex_value, t_stage=stage)


def parse_t_stage(text: str | None) -> str | None:
    if _given(text) is None:
        return None
    match = re.fullmatch(r"(?:c|p|y|yc|yp)?T([1-4])[a-d]?", text.strip(), flags=re.IGNORECASE)
    if not match:
        raise ValueError(f"T stage {text!r} is not T1-T4")
    return f"T{match.group(1)}"


def parse_n_stage(text: str | None) -> int | None:
    if _given(text) is None:
        return None
    match = re.fullmatch(r"(?:c|p|y|yc|yp)?N([0-2])[a-c]?", text.strip(), flags=re.IGNORECASE)
    if not match:
        raise ValueError(f"N stage {text!r} is not N0-N2")
    return 0 if match.group(1) == "0" else 1


@dataclass(frozen=True)
class CohortEntry:
    patient_id: str
    image: Path
    segmentation: Path
    clinical: ClinicalData
    label: int | None  # 1 = node positive (N1/N2), 0 = N0, None = unknown


def read_manifest(path: str | Path) -> list[CohortEntry]:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "manifest not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(path, f"is not UTF-8 text (byte {error.start}); save the manifest as UTF-8 CSV") from None
    if "\x00" in text:
        raise InputError(path, "holds NUL bytes: not a CSV text file")
    try:
        return _parse_manifest(path, text)
    except csv.Error as error:
        raise InputError(path, f"is not a readable CSV ({error})") from None


def _parse_manifest(path: Path, text: str) -> list[CohortEntry]:
    """The entries of a manifest's text (see :func:`read_manifest`)."""
    import io

    with io.StringIO(text, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise InputError(path, f"manifest lacks column(s): {', '.join(missing)}")
        entries, seen = [], set()
        for line, raw in enumerate(reader, start=2):
            if None in raw:  # DictReader files surplus fields under the key None
                raise InputError(path, f"line {line}: more fields than the header's {len(columns)} columns")
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            try:
                patient = row["patient_id"]
                if not patient:
                    raise ValueError("empty patient_id")
                if patient in seen:
                    raise ValueError(f"patient {patient!r} appears twice")
                seen.add(patient)
                clinical = ClinicalData.from_text(row.get("age"), row.get("sex"), row.get("t_stage"))
                label = parse_n_stage(row.get("n_stage"))
            except (ValueError, InputError) as error:
                raise InputError(path, f"line {line}: {error}") from None
            entries.append(CohortEntry(patient, path.parent / row["image"], path.parent / row["segmentation"], clinical, label))
    if not entries:
        raise InputError(path, "manifest has no patient rows")
    return entries
