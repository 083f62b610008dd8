"""The survival outputs: Kaplan-Meier and hazard-ratio PNGs, a self-contained HTML summary, survival.json."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from .analysis import SurvivalAnalysis

SURVIVAL_FILE = "survival.json"
KM_PLOT = "km.png"
FOREST_PLOT = "cox_forest.png"
HTML_FILE = "survival.html"
DPI = 110


def plot_kaplan_meier(analysis: SurvivalAnalysis, path: Path, title: str) -> None:
    """Kaplan-Meier curves with 95% bands, censoring ticks and the numbers at risk under the axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from lifelines.plotting import add_at_risk_counts

    figure, axes = plt.subplots(figsize=(7.5, 5.2))
    for fitter in analysis.km:
        fitter.plot_survival_function(ax=axes, ci_show=True, show_censors=True, censor_styles={"ms": 4, "marker": "|"})
    axes.set_ylim(0, 1.02)
    axes.set_ylabel("survival probability")
    axes.set_xlabel(f"time ({analysis.summary['time_unit']})")
    logrank = analysis.summary["logrank"]
    axes.set_title(f"{title}\nlog-rank p = {logrank['p']:.3g}", fontsize=10)
    axes.grid(alpha=0.3)
    add_at_risk_counts(*analysis.km, ax=axes, rows_to_show=["At risk"])
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def plot_forest(analysis: SurvivalAnalysis, path: Path) -> None:
    """Hazard ratios of the multivariable model with 95% intervals (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    terms = analysis.summary["cox_multivariable"]["terms"]
    names = list(terms)[::-1]
    figure, axes = plt.subplots(figsize=(6.5, 0.45 * len(names) + 1.4))
    for row, name in enumerate(names):
        low, high = terms[name]["ci95"]
        axes.plot([low, high], [row, row], color="#333")
        axes.plot(terms[name]["hr"], row, "s", color="#b00020")
    axes.axvline(1.0, color="#888", linestyle="--", linewidth=1)
    axes.set_xscale("log")
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("hazard ratio (95% CI), multivariable Cox")
    axes.grid(alpha=0.3, axis="x")
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def _e(value: Any) -> str:
    return html.escape(str(value))


def _ci(values: list[float | None]) -> str:
    low, high = values
    return "n/a" if low is None or high is None else f"{low:.3f}-{high:.3f}"


def _term_rows(terms: dict[str, Any]) -> str:
    return "".join(f"<tr><td class='name'>{_e(name)}</td><td>{t['hr']:.3f}</td><td>{_ci(t['ci95'])}</td>"
                   f"<td>{t['p']:.3g}</td></tr>" for name, t in terms.items())


def render_html(analysis: SurvivalAnalysis, images: dict[str, bytes], title: str) -> str:
    """One self-contained page (plots inlined as data URIs)."""
    s = analysis.summary
    unit = s["time_unit"]
    group_rows = ""
    for level, group in s["groups"].items():
        horizons = "".join(f"<td>{v['estimate']:.3f} ({_ci(v['ci95'])})</td>" for v in group["survival_at"].values())
        median = "not reached" if group["median"] is None else f"{group['median']:g}"
        group_rows += (f"<tr><td class='name'>{_e(s['columns']['group'])} = {_e(level)}</td><td>{group['n']}</td>"
                       f"<td>{group['events']}</td>{horizons}<td>{median}</td></tr>")
    horizon_heads = "".join(f"<th>S({_e(h)} {_e(unit)}) (95% CI)</th>" for h in s["horizons"])
    ph = s["proportional_hazards"]
    ph_rows = "".join(f"<tr><td class='name'>{_e(n)}</td><td>{v['statistic']:.3f}</td><td>{v['p']:.3g}</td></tr>"
                      for n, v in ph["terms"].items())
    flagged = ", ".join(ph["flagged"]) or "none"
    missing = ", ".join(f"{k}: {v}" for k, v in s["excluded"]["missing_by_column"].items() if v) or "none"
    pictures = "".join(f"<figure><img src='data:image/png;base64,{base64.b64encode(data).decode('ascii')}' "
                       f"alt='{_e(name)}'></figure>" for name, data in images.items())
    multi = s["cox_multivariable"]
    return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>body{{font-family:system-ui,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1100px}}
table{{border-collapse:collapse;font-size:0.9em;margin:8px 0}}td,th{{border:1px solid #ccc;padding:3px 7px;text-align:right}}
th{{background:#eee}}td.name{{text-align:left}}figure{{display:inline-block;margin:6px}}</style></head><body>
<h1>{_e(title)}</h1>
<p>{s['n']} patients, {s['events']} events (time in {_e(unit)}); {s['excluded']['rows_excluded']} of
{s['excluded']['rows_read']} rows excluded for missing values ({_e(missing)}). Research use only.</p>
{pictures}
<h2>Kaplan-Meier</h2><table><tr><th>group</th><th>n</th><th>events</th>{horizon_heads}<th>median ({_e(unit)})</th></tr>
{group_rows}</table>
<p>Log-rank test: chi-square {s['logrank']['statistic']:.3f} ({s['logrank']['degrees_of_freedom']} df), p = {s['logrank']['p']:.3g}.</p>
<h2>Cox proportional hazards, univariable</h2>
<table><tr><th>term</th><th>HR</th><th>95% CI</th><th>p</th></tr>{_term_rows(s['cox_univariable'])}</table>
<h2>Cox proportional hazards, multivariable</h2>
<p>{multi['n']} patients, {multi['events']} events, concordance {multi['concordance']:.3f}.</p>
<table><tr><th>term</th><th>HR</th><th>95% CI</th><th>p</th></tr>{_term_rows(multi['terms'])}</table>
<h2>Proportional-hazards check</h2><p>{_e(ph['method'])}; terms with p &lt; {ph['flagged_p_below']}: {_e(flagged)}.</p>
<table><tr><th>term</th><th>statistic</th><th>p</th></tr>{ph_rows}</table>
<p>Categorical terms are named column[level] and compare that level with the column's first level
({_e('; '.join(f'{k}: {v[0]}' for k, v in s['levels'].items()))}).</p>
</body></html>
"""


def write_survival_outputs(analysis: SurvivalAnalysis, folder: Path, title: str) -> None:
    """Write the PNGs, the HTML summary and survival.json into ``folder`` (a fresh temporary folder)."""
    plot_kaplan_meier(analysis, folder / KM_PLOT, title)
    plot_forest(analysis, folder / FOREST_PLOT)
    images = {name: (folder / name).read_bytes() for name in (KM_PLOT, FOREST_PLOT)}
    (folder / HTML_FILE).write_text(render_html(analysis, images, title), encoding="utf-8")
    (folder / SURVIVAL_FILE).write_text(json.dumps(analysis.summary, indent=2) + "\n", encoding="utf-8")
