"""The cohort summary table: one patient row per case (failed ones with their reason) followed by its node
rows, written as CSV and Parquet. Rows are built from the per-case report.json files one case at a time, so
a resumed run's table is complete and memory does not grow with the cohort's images."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from ..io.atomic import atomic_path
from ..prediction import NodePrediction
from .cases import CaseTask, read_status

SUMMARY_CSV = "summary.csv"
SUMMARY_PARQUET = "summary.parquet"
PATIENT_COLUMNS = ("patient_id", "row", "status", "reason", "case_folder", "label_n_stage", "age", "sex", "t_stage",
                   "probability", "std", "threshold", "positive", "uncertain", "uncertainty_reasons", "n_nodes",
                   "n_skipped_nodes", "model", "model_manifest_sha256", "dicom_export")
NODE_COLUMNS = ("node_id", "segment_name", "in_patient_bag", "n_patches", *NodePrediction.MEASUREMENT_KEYS,
                "heterogeneity_cv", "esgar_suspicious", "esgar_round", "esgar_irregular_border",
                "esgar_heterogeneous", "esgar_n_features", "esgar_rule", "lateral_short_axis_7mm")
COLUMNS = (*PATIENT_COLUMNS, *NODE_COLUMNS)


def _node_row(base: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    esgar = node.get("criteria", {}).get("esgar", {})
    row = dict(base, row="node", probability=node["probability"], std=node["std"], node_id=node["node_id"],
               segment_name=node["segment_name"], in_patient_bag=node["in_patient_bag"], n_patches=node["n_patches"],
               heterogeneity_cv=node.get("heterogeneity_cv"),
               lateral_short_axis_7mm=node.get("criteria", {}).get("lateral_short_axis_7mm"))
    row.update({key: node.get(key) for key in NodePrediction.MEASUREMENT_KEYS})
    row.update({f"esgar_{key}": esgar.get(key) for key in ("suspicious", "round", "irregular_border", "heterogeneous",
                                                          "n_features", "rule")})
    for key in ("positive", "uncertain", "uncertainty_reasons", "threshold"):
        row[key] = None  # patient-level values stay on the patient row
    return row


def case_rows(task: CaseTask) -> list[dict[str, Any]]:
    """The patient row and node rows of one case (its status and, when done, its report.json)."""
    status = read_status(task) or {"status": "not run", "reason": "no status recorded"}
    clinical = task.clinical
    base = {"patient_id": task.patient_id, "status": status.get("status"), "reason": status.get("reason", ""),
            "case_folder": f"cases/{Path(task.folder).name}", "label_n_stage": task.label, "age": clinical.age,
            "sex": clinical.sex, "t_stage": clinical.t_stage}
    dicom = status.get("dicom")
    if isinstance(dicom, dict):
        base["dicom_export"] = "written" if dicom.get("written") else dicom.get("reason")
    report_file = Path(task.folder) / "report.json"
    if status.get("status") != "done" or not report_file.is_file():
        return [dict(base, row="patient")]
    report = json.loads(report_file.read_text(encoding="utf-8"))
    patient, model = report["patient"], report["model"]
    base.update(model=model["name"], model_manifest_sha256=model["manifest_sha256"])
    patient_row = dict(base, row="patient", probability=patient["probability"], std=patient["std"],
                       threshold=patient["threshold"], positive=patient["positive"], uncertain=patient["uncertain"],
                       uncertainty_reasons="; ".join(patient["uncertainty_reasons"]), n_nodes=len(report["nodes"]),
                       n_skipped_nodes=len(report.get("skipped_nodes", [])))
    return [patient_row, *(_node_row(base, node) for node in report["nodes"])]


def write_summary(tasks: list[CaseTask], out_dir: Path) -> tuple[int, int]:
    """Write summary.csv and summary.parquet (atomically) for ``tasks``; returns (patient rows, node rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for task in tasks:
        rows.extend(case_rows(task))
    rows = [{column: row.get(column) for column in COLUMNS} for row in rows]
    with atomic_path(out_dir / SUMMARY_CSV) as temporary:
        with temporary.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    schema = _schema(rows)
    text = [field.name for field in schema if field.type == pa.string()]
    rows = [{k: (str(v) if k in text and v is not None else v) for k, v in row.items()} for row in rows]
    table = pa.Table.from_pylist(rows, schema=schema)
    with atomic_path(out_dir / SUMMARY_PARQUET) as temporary:
        pq.write_table(table, temporary)
    patients = sum(row["row"] == "patient" for row in rows)
    return patients, len(rows) - patients


def _schema(rows: list[dict[str, Any]]) -> Any:
    """Column types from the values (a column of only missing values is text), so that every run of the same
    cohort has the same Parquet schema whatever the order of the rows."""
    import pyarrow as pa

    fields = []
    for column in COLUMNS:
        kinds = {type(row[column]) for row in rows if row[column] is not None}
        if kinds <= {bool} and kinds:
            kind = pa.bool_()
        elif kinds <= {int} and kinds:
            kind = pa.int64()
        elif kinds <= {int, float} and kinds:
            kind = pa.float64()
        else:
            kind = pa.string()
        fields.append(pa.field(column, kind))
    return pa.schema(fields)
