"""The survival figures, all estimated by lifelines: Kaplan-Meier per group (95% pointwise bands, the
exponential Greenwood interval lifelines uses), survival at horizons, the log-rank test, univariable and
multivariable Cox proportional hazards (Efron ties) and the Schoenfeld-residual proportional-hazards test.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from .table import SurvivalTable

ALPHA = 0.05  # 95% intervals everywhere
PH_P_BELOW = 0.05  # a term whose proportional-hazards test p is below this is flagged


@dataclass
class SurvivalAnalysis:
    """``summary``: the content of survival.json; ``km``: the fitted KaplanMeierFitter per group (in the
    table's level order); ``cox``: the fitted multivariable CoxPHFitter (for the plots)."""

    summary: dict[str, Any]
    km: list[Any]
    cox: Any


def _r(value: Any, digits: int = 6) -> float | None:
    value = float(value)
    return round(value, digits) if value == value and abs(value) != float("inf") else None


def _p(value: Any) -> float | None:
    """A p-value with 6 significant digits (a fixed number of decimals would turn 1e-23 into 0)."""
    value = float(value)
    return float(f"{value:.6g}") if value == value else None


def horizon_key(horizon: float) -> str:
    """The survival.json key of a horizon: the number in its shortest form ('1825', '2.5')."""
    return f"{horizon:g}"


def _kaplan_meier(table: SurvivalTable, horizons: list[float]) -> tuple[dict[str, Any], list[Any]]:
    from lifelines import KaplanMeierFitter
    from lifelines.utils import median_survival_times

    groups, fitters = {}, []
    for level in table.group_levels():
        rows = [i for i, g in enumerate(table.group) if g == level]
        durations = [table.time[i] for i in rows]
        events = [table.event[i] for i in rows]
        fitter = KaplanMeierFitter(alpha=ALPHA).fit(durations, events, label=f"{table.group_column} = {level}")
        bands = fitter.confidence_interval_survival_function_
        at = {}
        for horizon in horizons:
            estimate = float(fitter.survival_function_at_times(horizon).iloc[0])
            band = bands.loc[:horizon].iloc[-1]  # the step function's value at the horizon
            at[horizon_key(horizon)] = {
                "estimate": _r(estimate), "ci95": [_r(band.iloc[0]), _r(band.iloc[1])],
                "at_risk": int(sum(d >= horizon for d in durations)),
                "beyond_follow_up": bool(horizon > max(durations)),
            }
        median_band = median_survival_times(fitter.confidence_interval_)
        groups[level] = {
            "n": len(rows), "events": int(sum(events)), "survival_at": at,
            "median": _r(fitter.median_survival_time_),
            "median_ci95": [_r(median_band.iloc[0, 0]), _r(median_band.iloc[0, 1])],
        }
        fitters.append(fitter)
    return groups, fitters


def _cox(table: SurvivalTable, columns: list[str]) -> tuple[Any, Any]:
    """(fitted CoxPHFitter, its data frame) of ``columns``; a model lifelines cannot fit is an InputError."""
    import pandas as pd
    from lifelines import CoxPHFitter
    from lifelines.exceptions import ConvergenceError, ConvergenceWarning

    frame = pd.DataFrame(table.design(columns))
    fitter = CoxPHFitter(alpha=ALPHA)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        try:
            fitter.fit(frame, duration_col="__time", event_col="__event")
        except (ConvergenceError, ConvergenceWarning, ValueError, ZeroDivisionError) as error:
            detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise InputError(table.source, f"the Cox model of {', '.join(columns)} cannot be fitted ({detail})") from None
    return fitter, frame


def _terms(fitter: Any) -> dict[str, dict[str, Any]]:
    summary = fitter.summary
    return {str(term): {"hr": _r(row["exp(coef)"]),
                        "ci95": [_r(row["exp(coef) lower 95%"]), _r(row["exp(coef) upper 95%"])],
                        "p": _p(row["p"]), "coef": _r(row["coef"]), "se": _r(row["se(coef)"])}
            for term, row in summary.iterrows()}


def _ph_check(fitter: Any, frame: Any) -> dict[str, Any]:
    from lifelines.statistics import proportional_hazard_test

    result = proportional_hazard_test(fitter, frame, time_transform="rank")
    terms = {str(term if not isinstance(term, tuple) else term[0]): {"statistic": _r(row["test_statistic"]),
                                                                       "p": _p(row["p"])}
             for term, row in result.summary.iterrows()}
    return {"method": "Schoenfeld residuals against the rank of time (lifelines proportional_hazard_test)",
            "terms": terms, "flagged_p_below": PH_P_BELOW,
            "flagged": [term for term, value in terms.items() if value["p"] is not None and value["p"] < PH_P_BELOW]}


def analyse(table: SurvivalTable, horizons: list[float], time_unit: str) -> SurvivalAnalysis:
    """Every figure of survival.json for ``table``.

    Args:
        table: the complete-case rows (see :func:`read_survival_table`).
        horizons: times (in ``time_unit``) at which survival is estimated per group.
        time_unit: the unit of the table's time column, stated in the outputs.

    Returns:
        The :class:`SurvivalAnalysis`.
    """
    from lifelines.statistics import multivariate_logrank_test

    groups, fitters = _kaplan_meier(table, horizons)
    logrank = multivariate_logrank_test(table.time, table.group, table.event)
    columns = [table.group_column, *table.covariate_columns]
    univariable = {}
    for column in columns:
        fitter, _ = _cox(table, [column])
        univariable.update(_terms(fitter))
    multi, frame = _cox(table, columns)
    summary = {
        "n": table.n, "events": int(sum(table.event)), "time_unit": time_unit,
        "columns": {"time": table.time_column, "event": table.event_column, "group": table.group_column,
                    "covariates": list(table.covariate_columns)},
        "excluded": {"rows_read": table.rows_read, "rows_excluded": table.excluded,
                     "missing_by_column": dict(table.excluded_by_column)},
        "levels": {name: list(levels) for name, levels in table.levels.items()},
        "horizons": [horizon_key(h) for h in horizons],
        "groups": groups,
        "logrank": {"statistic": _r(logrank.test_statistic), "p": _p(logrank.p_value),
                    "degrees_of_freedom": int(logrank.degrees_of_freedom)},
        "cox_univariable": univariable,
        "cox_multivariable": {"n": len(frame), "events": int(frame["__event"].sum()),
                              "concordance": _r(multi.concordance_index_), "terms": _terms(multi),
                              "ties": "Efron"},
        "proportional_hazards": _ph_check(multi, frame),
    }
    return SurvivalAnalysis(summary, fitters, multi)
