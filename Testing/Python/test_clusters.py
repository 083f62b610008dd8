"""`lnmstaging explain clusters`: k chosen at the elbow, the paper's Table 4 statistics, latent maps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from LNMStagingLib.cli.main import main
from LNMStagingLib.io.atomic import OUTPUT_LISTING
from LNMStagingLib.prediction.clusters import STAT_FEATURES, cluster_table, elbow, mean_within_sd

OUTPUTS = {"clusters.json", "table4.md", "assignments.csv", "latent_map.png", "k_selection.png", OUTPUT_LISTING}


def test_elbow_finds_the_bend():
    ks = np.arange(2, 31, dtype=float)
    curve = np.where(ks <= 10, 10 - 0.8 * (ks - 2), 3.6 - 0.05 * (ks - 10))  # steep, then flat after k = 10
    assert elbow(ks, curve) == 10


def test_table_statistics_exclude_small_clusters():
    assignment = np.array([0, 0, 0, 1, 1, 1, 1, 2])
    values = {name: np.array([1, 2, 3, 10, 10, 12, 12, 100], float) for name in STAT_FEATURES}
    table = cluster_table(assignment, values)
    short = table["features"]["short_axis_mm"]
    assert table["clusters_used"] == 2  # the singleton cluster 2 is left out
    assert short["global_range"] == 99 and short["max_range_ic"] == 2 and short["min_range_ic"] == 2
    assert short["mean_sd_ic"] == pytest.approx((np.std([1, 2, 3]) + np.std([10, 10, 12, 12])) / 2)
    assert mean_within_sd(assignment, values["short_axis_mm"])[1] == 2


def _check_outputs(out, n_min):
    assert {p.name for p in out.iterdir()} == OUTPUTS
    summary = json.loads((out / "clusters.json").read_text())
    assert summary["n_nodules"] >= n_min and 2 <= summary["k"]
    table = summary["table4"]["features"]
    for name in STAT_FEATURES:
        assert table[name]["global_sd"] >= 0 and table[name]["mean_sd_ic"] is not None
    assert table["border_irregularity"]["global_range"] == pytest.approx(1.0)
    assert "Mean $\\sigma_{IC}$" in (out / "table4.md").read_text()
    return summary


def test_clusters_on_a_synthetic_set(tiny_bundle_dir, tmp_path, capsys):
    from LNMStagingLib.synthetic.nodules import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "data", n_patients=30, seed=3)
    out = tmp_path / "clusters"
    assert main(["explain", "clusters", "--model", str(tiny_bundle_dir), "--data", str(data), "--out", str(out),
                 "--k-max", "12"]) == 0
    summary = _check_outputs(out, 30)
    assert 2 <= summary["k"] <= 12 and len(summary["k_curve"]) >= 3
    assert "elbow" in summary["k_choice"] and "k = " in capsys.readouterr().out


def test_clusters_on_a_cohort_manifest(tiny_bundle_dir, tmp_path):
    """A user's cohort: nodes of every case (prepared as `predict` does), coloured by the patient's N stage."""
    import csv

    from LNMStagingLib.synthetic.phantom import write_phantom

    stages = {"A": "N0", "B": "N1", "C": ""}  # C: N stage unknown, still clustered
    with open(tmp_path / "cohort.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patient_id", "image", "segmentation", "n_stage"])
        for i, (patient, stage) in enumerate(stages.items()):
            write_phantom(tmp_path / patient, extra_nodes=2, seed=i)
            writer.writerow([patient, f"{patient}/image.nrrd", f"{patient}/labels.nrrd", stage])
    out = tmp_path / "clusters"
    assert main(["explain", "clusters", "--model", str(tiny_bundle_dir), "--manifest", str(tmp_path / "cohort.csv"),
                 "--out", str(out), "--k", "3", "--no-progress"]) == 0
    summary = _check_outputs(out, 9)
    assert "N stage" in summary["label"] and all("n_plus_patient_fraction" in c for c in summary["clusters"])
    with open(out / "assignments.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    label_of = {"A": "0", "B": "1", "C": "-1"}
    assert {r["patient_id"] for r in rows} == set(stages)
    assert all(r["label"] == label_of[r["patient_id"]] for r in rows)


def test_clusters_refuse_a_missing_data_folder(tiny_bundle_dir, tmp_path, capsys):
    out = tmp_path / "clusters"
    assert main(["explain", "clusters", "--model", str(tiny_bundle_dir), "--data", str(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nodules.npz" in err and not out.exists()


def test_clusters_on_lidc(lidc_dir, tiny_bundle_dir, tmp_path):
    out = tmp_path / "clusters"
    assert main(["explain", "clusters", "--model", str(tiny_bundle_dir), "--data", str(lidc_dir), "--out", str(out),
                 "--k-max", "15"]) == 0
    summary = _check_outputs(out, 700)
    table = summary["table4"]["features"]
    # the paper's observation: nodules within a cluster vary less in size than all nodules together
    assert table["short_axis_mm"]["mean_sd_ic"] < table["short_axis_mm"]["global_sd"]
