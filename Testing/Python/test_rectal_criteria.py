"""The criteria as one function of node reads; the rectal T2 read data; ``benchmark criteria``.

The tests on the real data (``../shared/data/rectal-t2-nodes`` or ``$LNMSTAGING_RECTAL_DIR``) skip with a
stated reason when it is absent.
"""

from __future__ import annotations

import csv
import json
import math

import pytest

from LNMStagingLib.cli.main import main
from LNMStagingLib.data.rectal import default_rectal_dir, load_rectal
from LNMStagingLib.errors import InputError
from LNMStagingLib.evaluation.criteria_benchmark import evaluate_sets, patient_rule
from LNMStagingLib.evaluation.proportions import confusion_proportions, mean_of_two_interval, wilson_interval
from LNMStagingLib.imaging import criteria
from LNMStagingLib.imaging.criteria import CRITERIA_SETS, NodeReads, meets, node_criteria


@pytest.fixture(scope="module")
def rectal_dir():
    path = default_rectal_dir()
    if not (path / "patients.csv").is_file():
        pytest.skip(f"rectal T2 node data not found at {path} (set LNMSTAGING_RECTAL_DIR); the real-data tests need it")
    return path


@pytest.mark.parametrize("short, shape, border, texture, expected", [
    (9.0, False, False, False, True),  # size alone
    (8.9, True, False, False, False),  # 5-9 mm, one feature
    (5.0, True, True, False, True),  # 5 mm belongs to the 5-9 band: two features suffice
    (4.9, True, True, False, False),  # < 5 mm needs all three
    (2.0, True, True, True, True),
])
def test_esgar_on_reads(short, shape, border, texture, expected):
    reads = NodeReads(short, shape, border, texture)
    assert meets("esgar_2016", reads) is expected
    assert node_criteria(reads)["esgar"]["suspicious"] is expected
    assert node_criteria(reads)["sets"]["esgar_2016"] is expected


def test_predict_and_reads_share_the_rule():
    """A measured node and the same reads given directly get the same criteria (one function)."""
    from LNMStagingLib.imaging.measure import NodeMeasurement

    measurement = NodeMeasurement(1, "n", 6.0, 6.5, 6.0 / 6.5, 0.9, 1.1, 100.0, 2, 0, 0, 0, 0, 30.0)
    measured = criteria.evaluate(measurement, 0.05)
    reads = criteria.reads_from_measurement(measurement, 0.05)
    assert (reads.round, reads.irregular_border, reads.heterogeneous, reads.signal) == (True, True, False, None)
    assert measured == node_criteria(reads)
    assert measured["esgar"]["suspicious"] and measured["sets"]["koh_2008"] and not measured["sets"]["groene_2017"]


def test_size_rules_and_set_definitions():
    small, large = NodeReads(6.9, False, False, False), NodeReads(7.0, False, False, False)
    assert not meets("lateral_7mm", small) and meets("lateral_7mm", large)
    assert meets("short_axis_5mm", small) and not meets("short_axis_9mm", large)
    assert meets("barbaro_2024", NodeReads(2.3, False, False, False)) and not meets("barbaro_2024", NodeReads(2.2, False, False, False))
    for item in CRITERIA_SETS.values():
        assert item.definition and item.reference and set(item.uses) <= {"short_axis_mm", "round", "irregular_border",
                                                                          "heterogeneous", "signal"}


def test_wilson_interval_known_values():
    # textbook values (Newcombe, Stat Med 1998, Table I): 0/10 -> 0-0.2775, 10/10 -> 0.7225-1, 15/148
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(15, 148) == pytest.approx((0.0624, 0.1605), abs=1e-4)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    low, high = mean_of_two_interval(0.8, (0.7, 0.9), 0.6, (0.5, 0.7))
    assert low < 0.7 < high and high - low < 0.2  # narrower than averaging the bounds (conservative)


def test_confusion_proportions():
    row = confusion_proportions(tp=8, fp=2, fn=2, tn=8)
    assert row["sensitivity"] == row["specificity"] == row["ppv"] == row["npv"] == row["accuracy"] == 0.8
    assert row["balanced_accuracy"] == 0.8 and row["sensitivity_ci95"] == list(wilson_interval(8, 10))
    assert math.isnan(confusion_proportions(0, 0, 3, 5)["ppv"])


def _write(folder, patients: str, nodes: str):
    folder.mkdir()
    (folder / "patients.csv").write_text(patients)
    (folder / "t2_nodes.csv").write_text(nodes)
    return folder


PATIENTS = ("patient_id,age,sex,therapy,n_status\n1,60,m,surgeryAlone,1\n2,70,f,neoadjuvantTherapy,0\n"
            "3,50,m,neoadjuvantTherapy,1\n")
NODES = ("patient_id,node_index,short_axis_mm,shape,border,homogeneity,signal\n1,1,10,oval,sharp,homogeneous,\n"
         "2,1,6,round,irregular,homogeneous,lowSignal\n")


def test_patient_call_on_a_small_data_set(tmp_path):
    """Patient 3 has no T2 node: negative under every set (here a false negative)."""
    patients = load_rectal(_write(tmp_path / "d", PATIENTS, NODES))
    assert [len(p.nodes) for p in patients] == [1, 1, 0] and patients[1].nodes[0].signal == "low"
    esgar = evaluate_sets(patients)["all"]["esgar_2016"]
    assert (esgar["tp"], esgar["fp"], esgar["fn"], esgar["tn"]) == (1, 1, 1, 0)
    by_therapy = evaluate_sets(patients)["neoadjuvantTherapy"]["esgar_2016_by_therapy"]
    assert (by_therapy["fp"], by_therapy["fn"]) == (1, 1)  # 6 mm after therapy meets the restaging rule
    assert not patient_rule("short_axis_9mm")(patients[1])


@pytest.mark.parametrize("patients, nodes, problem", [
    (PATIENTS, NODES.replace("oval", "ovoid"), "shape 'ovoid' is not one of"),
    (PATIENTS, NODES.replace("\n2,1,6", "\n9,1,6"), "patient_id '9' is not in patients.csv"),
    (PATIENTS.replace("70,f", "x,f"), NODES, "age 'x' is not a number"),
    (PATIENTS.replace(",n_status", ",status"), NODES, "missing column(s) n_status"),
])
def test_bad_data_is_one_line_and_writes_nothing(tmp_path, capsys, patients, nodes, problem):
    folder = _write(tmp_path / "d", patients, nodes)
    with pytest.raises(InputError, match="line|column"):
        load_rectal(folder)
    out = tmp_path / "out"
    assert main(["benchmark", "criteria", "--data", str(folder), "--out", str(out)]) == 2
    message = capsys.readouterr().err.strip()
    assert problem in message and len(message.splitlines()) == 1 and "Traceback" not in message
    assert not out.exists()


def _independent_esgar_counts(folder):
    """ESGAR 2016 per patient from the CSV files, written out again here as the oracle (not the library's code)."""
    with open(folder / "patients.csv", newline="") as handle:
        status = {r["patient_id"]: int(r["n_status"]) for r in csv.DictReader(handle)}
    positive = dict.fromkeys(status, False)
    with open(folder / "t2_nodes.csv", newline="") as handle:
        for r in csv.DictReader(handle):
            size = float(r["short_axis_mm"])
            count = (r["shape"] == "round") + (r["border"] == "irregular") + (r["homogeneity"] == "heterogeneous")
            if size >= 9 or (size >= 5 and count >= 2) or count == 3:
                positive[r["patient_id"]] = True
    pairs = [(positive[p], status[p] == 1) for p in status]
    return tuple(sum(1 for c, y in pairs if (c, y) == key) for key in ((True, True), (True, False), (False, True),
                                                                       (False, False)))


def test_criteria_benchmark_on_the_real_data(rectal_dir, tmp_path):
    out = tmp_path / "criteria"
    assert main(["benchmark", "criteria", "--data", str(rectal_dir), "--out", str(out)]) == 0
    result = json.loads((out / "criteria.json").read_text())
    table = (out / "criteria.md").read_text()
    assert result["data"]["patients"] == 120 and result["data"]["nodes"] == 621  # SOURCE.md's facts
    for cohort, n, positive in (("all", 120, 56), ("surgeryAlone", 32, 18), ("neoadjuvantTherapy", 88, 38)):
        rows = result["results"][cohort]
        assert set(rows) >= {"esgar_2016", "lateral_7mm", "short_axis_5mm", "short_axis_7mm", "short_axis_9mm"}
        for row in rows.values():
            assert row["n"] == n and row["tp"] + row["fn"] == positive
            for key in ("sensitivity", "specificity", "accuracy", "balanced_accuracy", "ppv", "npv"):
                low, high = row[f"{key}_ci95"]
                assert low <= row[key] <= high
        assert f"## {cohort} ({n} patients, {positive} pN+)" in table
    esgar = result["results"]["all"]["esgar_2016"]
    assert (esgar["tp"], esgar["fp"], esgar["fn"], esgar["tn"]) == _independent_esgar_counts(rectal_dir)
    # a 5 mm size rule can only call more patients positive than a 9 mm one
    rows = result["results"]["all"]
    assert rows["short_axis_5mm"]["sensitivity"] >= rows["short_axis_7mm"]["sensitivity"] >= rows["short_axis_9mm"]["sensitivity"]
    assert "Lurz M" in table and "| `esgar_2016` |" in table
    # the folder is an output of this command: a rerun replaces it; another folder with files is refused
    assert main(["benchmark", "criteria", "--data", str(rectal_dir), "--out", str(out)]) == 0
    assert main(["benchmark", "criteria", "--data", str(rectal_dir), "--out", str(rectal_dir)]) == 2
