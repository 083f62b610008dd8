"""Survival analysis of a cohort table: Kaplan-Meier, log-rank, Cox PH, with lifelines."""

from . import analysis, report, table
from .analysis import SurvivalAnalysis, analyse, horizon_key
from .report import SURVIVAL_FILE, write_survival_outputs
from .table import SurvivalTable, read_survival_table

__all__ = [
    "analysis", "report", "table",
    "SURVIVAL_FILE",
    "SurvivalAnalysis",
    "SurvivalTable",
    "analyse",
    "horizon_key",
    "read_survival_table",
    "write_survival_outputs",
]
