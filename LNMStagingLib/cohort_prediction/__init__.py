"""Batch prediction of a cohort: resumable, failure-tolerant, optionally on a Dask cluster."""

from . import cases, runner, summary
from .cases import CaseTask, case_folder_name, fingerprint, run_case
from .runner import COHORT_FILE, CohortRun, dask_client, run_cohort
from .summary import COLUMNS, SUMMARY_CSV, SUMMARY_PARQUET, write_summary

__all__ = [
    "cases", "runner", "summary",
    "COHORT_FILE",
    "COLUMNS",
    "SUMMARY_CSV",
    "SUMMARY_PARQUET",
    "CaseTask",
    "CohortRun",
    "case_folder_name",
    "dask_client",
    "fingerprint",
    "run_case",
    "run_cohort",
    "write_summary",
]
