"""The learned node-feature models against ESGAR: paired bootstrap comparison, the features, the command.

The command test on the real data (``../shared/data/rectal-t2-nodes`` or ``$LNMSTAGING_RECTAL_DIR``) skips
with a stated reason when it is absent.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from LNMStagingLib.cli.main import main
from LNMStagingLib.data.rectal import RectalPatient, default_rectal_dir
from LNMStagingLib.evaluation.rectal_features import compare
from LNMStagingLib.evaluation.rectal_models import NODE_FEATURES, largest_node_matrix, node_vector
from LNMStagingLib.imaging.criteria import NodeReads


def test_paired_bootstrap_separates_a_good_model_from_chance():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 60)
    good = np.clip(y + rng.normal(0, 0.3, (2, 120)), 0, 1)
    noise = rng.random((2, 120))
    methods = {"good": (good, good >= 0.5), "noise": (noise, noise >= 0.5),
               "baseline": (np.tile(noise[0], (2, 1)), np.tile(noise[0] >= 0.5, (2, 1)))}
    result = compare(y, methods, "baseline", n_boot=300, seed=0)
    assert result["good"]["auc_minus_baseline_ci95"][0] > 0.2  # clearly ahead
    low, high = result["noise"]["auc_minus_baseline_ci95"]
    assert low < 0 < high  # two chance predictors: the interval holds zero
    assert result["good"]["auc"] == pytest.approx(np.mean(result["good"]["auc_per_repeat"]))
    assert "auc_minus_baseline" not in result["baseline"]
    assert compare(y, methods, "baseline", n_boot=300, seed=0) == result  # seeded


def test_node_features_and_the_largest_node():
    reads = NodeReads(6.5, True, False, True, "intermediate")
    vector = dict(zip(NODE_FEATURES, node_vector(reads), strict=True))
    assert vector["short_axis_mm"] == 6.5 and vector["round"] == 1 and vector["irregular_border"] == 0
    assert vector["signal_intermediate"] == 1 and vector["signal_low"] == vector["signal_not_assessable"] == 0
    patients = [RectalPatient("1", 60, "m", "surgeryAlone", 1, [NodeReads(3, False, False, False), reads]),
                RectalPatient("2", 70, "f", "neoadjuvantTherapy", 0, [])]
    matrix = largest_node_matrix(patients)
    assert matrix[0, 0] == 6.5 and matrix[0, len(NODE_FEATURES)] == 0  # the largest node, present
    assert matrix[1, len(NODE_FEATURES)] == 1 and not matrix[1, : len(NODE_FEATURES)].any()  # no T2 node
    assert list(matrix[:, -1]) == [0, 1] and list(matrix[:, -2]) == [1, 0]  # therapy, sex


def test_rectal_features_command_on_the_real_data(tmp_path):
    data = default_rectal_dir()
    if not (data / "patients.csv").is_file():
        pytest.skip(f"rectal T2 node data not found at {data} (set LNMSTAGING_RECTAL_DIR); this test needs it")
    out = tmp_path / "features"
    assert main(["benchmark", "rectal-features", "--data", str(data), "--out", str(out), "--repeats", "1", "--folds",
                 "2", "--inner", "2", "--bootstrap", "100", "--quick"]) == 0
    result = json.loads((out / "features.json").read_text())
    rows = result["comparison"]
    assert set(rows) == {"mil", "logistic", "esgar_2016", "esgar_2016_by_therapy"}
    assert rows["esgar_2016"]["auc"] == pytest.approx(rows["esgar_2016"]["balanced_accuracy"])  # a yes/no call
    for name in ("mil", "logistic"):
        low, high = rows[name]["auc_ci95"]
        assert 0.5 < rows[name]["auc"] and low <= rows[name]["auc"] <= high
        low, high = rows[name]["auc_minus_esgar_2016_ci95"]
        assert low <= rows[name]["auc_minus_esgar_2016"] <= high
    assert len(result["choices"]) == 2 and (out / "features_roc.png").stat().st_size > 1000
    lines = (out / "predictions.csv").read_text().splitlines()
    assert len(lines) == 121 and lines[0].startswith("patient_id,n_status")
    assert "Verdict:" in (out / "features.md").read_text()
