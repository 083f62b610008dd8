"""`lnmstaging benchmark criteria`: the radiological criteria sets on the rectal T2 node reads, per patient.

A patient is called positive when any of its T2 nodes meets the set's rule (a patient without T2 nodes is
negative); the call is compared with the pathological N status. Per cohort (all, surgeryAlone,
neoadjuvantTherapy) and set: tp, fp, fn, tn and sensitivity, specificity, accuracy, balanced accuracy, PPV,
NPV with 95 % Wilson intervals (see :mod:`.proportions`). The node rules are those ``predict`` uses
(:mod:`LNMStagingLib.imaging.criteria`); here they get the radiologists' reads.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..data.rectal import COHORTS, STUDY, RectalPatient, load_rectal
from ..imaging.criteria import CRITERIA_SETS, meets
from ..io.atomic import atomic_directory
from .proportions import confusion_proportions

METRICS = ("sensitivity", "specificity", "accuracy", "balanced_accuracy", "ppv", "npv")
MARKER = "criteria.json"
# a patient-level application: the consensus' primary rule before therapy, its restaging rule after it
BY_THERAPY = "esgar_2016_by_therapy"
BY_THERAPY_DEFINITION = ("esgar_2016 for surgeryAlone patients, esgar_2016_restaging for neoadjuvantTherapy "
                         "patients (the consensus' two settings; Beets-Tan et al., Eur Radiol 2018)")


def patient_rule(name: str) -> Callable[[RectalPatient], bool]:
    """The patient-level call of a criteria set: positive when any node meets it.

    Args:
        name: a key of ``CRITERIA_SETS`` or ``esgar_2016_by_therapy``.

    Returns:
        A function of the patient giving its call.
    """
    if name == BY_THERAPY:
        return lambda p: any(meets("esgar_2016" if p.therapy == "surgeryAlone" else "esgar_2016_restaging", n)
                             for n in p.nodes)
    if name not in CRITERIA_SETS:
        raise KeyError(name)
    return lambda p: any(meets(name, n) for n in p.nodes)


def set_names() -> tuple[str, ...]:
    """Every criteria set the benchmark reports, in table order."""
    return (*CRITERIA_SETS, BY_THERAPY)


def evaluate_sets(patients: list[RectalPatient]) -> dict[str, dict[str, dict]]:
    """Per cohort and criteria set: the 2 x 2 counts and proportions with intervals.

    Args:
        patients: the data set's patients.

    Returns:
        ``{cohort: {set name: confusion_proportions(...) + {"n": ..., "n_positive": ...}}}``.
    """
    results: dict[str, dict[str, dict]] = {}
    for cohort in COHORTS:
        members = [p for p in patients if p.in_cohort(cohort)]
        results[cohort] = {}
        for name in set_names():
            rule = patient_rule(name)
            calls = [(rule(p), p.n_status == 1) for p in members]
            tp = sum(c and y for c, y in calls)
            fp = sum(c and not y for c, y in calls)
            fn = sum(not c and y for c, y in calls)
            tn = sum(not c and not y for c, y in calls)
            row = confusion_proportions(tp, fp, fn, tn)
            row.update({"n": len(members), "n_positive": tp + fn})
            results[cohort][name] = row
    return results


def _cell(row: dict, key: str) -> str:
    value, (low, high) = row[key], row[f"{key}_ci95"]
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.3f} ({low:.3f}-{high:.3f})"


def markdown_table(results: dict[str, dict[str, dict]], command: str) -> str:
    """The Markdown report: one table per cohort, then the definitions.

    Args:
        results: from :func:`evaluate_sets`.
        command: the command line that made it.

    Returns:
        The Markdown text.
    """
    lines = ["# Radiological criteria on the rectal T2 node reads (patient level)", "",
             f"Data: 120 rectal cancer patients, one centre, 3 T (`rectal-t2-nodes`); study: {STUDY}. The data "
             "set is not the published cohort as such (its SOURCE.md), so figures differ from the paper's.", "",
             "A patient is positive when any T2 node meets the rule; a patient without T2 nodes is negative. "
             "Reference standard: pathological N status (yp after neoadjuvant therapy). 95% Wilson intervals "
             "(balanced accuracy: MOVER combination of the two Wilson intervals).", "",
             f"Command: `{command}`", ""]
    header = "| criteria set | tp | fp | fn | tn | " + " | ".join(METRICS) + " |"
    for cohort, rows in results.items():
        any_row = next(iter(rows.values()))
        lines += [f"## {cohort} ({any_row['n']} patients, {any_row['n_positive']} pN+)", "", header,
                  "|" + "---|" * (5 + len(METRICS))]
        for name, row in rows.items():
            cells = [str(row[k]) for k in ("tp", "fp", "fn", "tn")] + [_cell(row, k) for k in METRICS]
            lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Definitions (node rules; references in docs/rectal.md)", ""]
    lines += [f"- `{s.name}`: {s.definition}. {s.reference}; made for: {s.setting}." for s in CRITERIA_SETS.values()]
    lines += [f"- `{BY_THERAPY}`: {BY_THERAPY_DEFINITION}.", ""]
    return "\n".join(lines)


def plot_operating_points(results: dict[str, dict[str, dict]], path: Path) -> Path:
    """Each set's (1 - specificity, sensitivity) per cohort with its Wilson intervals, in ROC space.

    Args:
        results: from :func:`evaluate_sets`.
        path: the PNG to write.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 4.4), dpi=110, sharey=True)
    for ax, (cohort, rows) in zip(np.atleast_1d(axes), results.items(), strict=True):
        for index, (name, row) in enumerate(rows.items()):
            x, y = 1 - row["specificity"], row["sensitivity"]
            xerr = [[x - (1 - row["specificity_ci95"][1])], [(1 - row["specificity_ci95"][0]) - x]]
            yerr = [[y - row["sensitivity_ci95"][0]], [row["sensitivity_ci95"][1] - y]]
            # sets with the same rule (e.g. lateral_7mm and short_axis_7mm) share a point: markers differ
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="osD^vP*Xph<>"[index % 12], ms=5, lw=0.7, capsize=2,
                        mfc="none" if index % 2 else None, label=name, color=plt.cm.tab20(index % 20))
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="1 - specificity", title=f"{cohort} (n={next(iter(rows.values()))['n']})")
    np.atleast_1d(axes)[0].set_ylabel("sensitivity")
    np.atleast_1d(axes)[-1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _null_nan(value):
    """Undefined proportions (nan, e.g. PPV without positive calls) as JSON null: strict readers refuse NaN."""
    if isinstance(value, dict):
        return {key: _null_nan(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_null_nan(item) for item in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def run_criteria_benchmark(data: str | Path, out: str | Path, command: str) -> Path:
    """Evaluate every criteria set and write ``out/criteria.json``, ``out/criteria.md`` and
    ``out/criteria_points.png`` (atomically).

    Args:
        data: the ``rectal-t2-nodes`` folder.
        out: the output folder (new, empty, or an earlier output of this command).
        command: the command line, recorded in both files.

    Returns:
        The path of the Markdown table.
    """
    patients = load_rectal(data)
    results = evaluate_sets(patients)
    payload = {
        "command": command,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data": {"folder": str(Path(data)), "patients": len(patients), "nodes": sum(len(p.nodes) for p in patients),
                 "study": STUDY},
        "patient_call": "positive when any T2 node meets the rule; no T2 nodes: negative",
        "interval": "95% Wilson score; balanced_accuracy: MOVER of the sensitivity and specificity intervals",
        "sets": {**{s.name: {"definition": s.definition, "reference": s.reference, "setting": s.setting,
                             "uses": list(s.uses)} for s in CRITERIA_SETS.values()},
                 BY_THERAPY: {"definition": BY_THERAPY_DEFINITION, "reference": CRITERIA_SETS["esgar_2016"].reference,
                              "setting": "by therapy", "uses": list(CRITERIA_SETS["esgar_2016"].uses)}},
        "results": results,
    }
    text = json.dumps(_null_nan(payload), indent=2, allow_nan=False)
    with atomic_directory(out, MARKER) as folder:
        (folder / MARKER).write_text(text + "\n", encoding="utf-8")
        (folder / "criteria.md").write_text(markdown_table(results, command), encoding="utf-8")
        plot_operating_points(results, folder / "criteria_points.png")
    return Path(out) / "criteria.md"
