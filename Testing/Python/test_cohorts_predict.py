"""`lnmstaging predict-cohort` on phantom cases with the tiny real bundle: each case as `predict` does, one
failure recorded while the rest go on, resumable (unchanged cases kept, changed ones redone), the summary
as CSV and Parquet, and a Dask LocalCluster giving the same results as the serial run."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import SimpleITK as sitk

from LNMStagingLib.cli.main import main
from LNMStagingLib.cohort_prediction import COLUMNS, fingerprint, run_cohort
from LNMStagingLib.cohort_prediction.cases import make_task
from LNMStagingLib.io.cohort import read_manifest


@pytest.fixture(scope="module")
def cohort(phantom_files, tmp_path_factory):
    """A manifest of two phantom cases (seg.nrrd and labelmap) and one with a missing image."""
    folder = tmp_path_factory.mktemp("cohort")
    second = folder / "p2"
    second.mkdir()
    shutil.copy(phantom_files.image, second / "image.nrrd")
    shutil.copy(phantom_files.labelmap, second / "labels.nrrd")
    manifest = folder / "manifest.csv"
    manifest.write_text("patient_id,image,segmentation,age,sex,t_stage,n_stage\n"
                        f"p1,{phantom_files.image},{phantom_files.segmentation},64,F,T3,N1\n"
                        "p2,p2/image.nrrd,p2/labels.nrrd,,M,,N0\n"
                        "p3,p3/absent.nrrd,p2/labels.nrrd,,,,\n", encoding="utf-8")
    return folder, manifest


def _rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _without_timings(report_file) -> dict:
    report = json.loads(report_file.read_text())
    report.pop("timings_s")
    report["input"].pop("image"), report["input"].pop("segmentation")
    report["model"].pop("path", None)
    return report


@pytest.fixture(scope="module")
def serial_run(cohort, tiny_bundle_dir, tmp_path_factory):
    _, manifest = cohort
    out = tmp_path_factory.mktemp("serial") / "run"
    assert main(["predict-cohort", str(manifest), "--model", str(tiny_bundle_dir), "--quiet", "--out", str(out)]) == 0
    return out


def test_each_case_as_predict_does(serial_run, phantom_prediction):
    report = json.loads((serial_run / "cases" / "p1" / "report.json").read_text())
    assert report["patient"]["probability"] == pytest.approx(phantom_prediction.patient.probability, abs=1e-6)
    assert [n["probability"] for n in report["nodes"]] == pytest.approx(
        [n.probability for n in phantom_prediction.nodes], abs=1e-6)
    assert (serial_run / "cases" / "p1" / "gradcam.nrrd").is_file() and (serial_run / "cases" / "p1" / "report.html").is_file()


def test_failure_recorded_and_the_rest_go_on(serial_run):
    status = json.loads((serial_run / "status" / "p3.json").read_text())
    assert status["status"] == "failed" and "absent.nrrd: file not found" in status["reason"]
    assert "\n" not in status["reason"] and not (serial_run / "cases" / "p3").exists()
    rows = _rows(serial_run / "summary.csv")
    patients = {r["patient_id"]: r for r in rows if r["row"] == "patient"}
    assert patients["p3"]["status"] == "failed" and patients["p3"]["reason"] == status["reason"]
    assert patients["p1"]["status"] == patients["p2"]["status"] == "done"
    assert patients["p1"]["label_n_stage"] == "1" and patients["p2"]["label_n_stage"] == "0"


def test_summary_csv_and_parquet(serial_run):
    rows = _rows(serial_run / "summary.csv")
    table = pq.read_table(serial_run / "summary.parquet").to_pylist()
    assert len(rows) == len(table) and tuple(rows[0]) == COLUMNS
    p1_nodes = [r for r in table if r["patient_id"] == "p1" and r["row"] == "node"]
    report = json.loads((serial_run / "cases" / "p1" / "report.json").read_text())
    assert len(p1_nodes) == len(report["nodes"]) > 1
    for row, node in zip(p1_nodes, report["nodes"], strict=True):
        assert row["probability"] == pytest.approx(node["probability"]) and row["node_id"] == node["node_id"]
        assert row["short_axis_mm"] == pytest.approx(node["short_axis_mm"])
        assert row["esgar_suspicious"] == node["criteria"]["esgar"]["suspicious"]
    patient = next(r for r in table if r["patient_id"] == "p1" and r["row"] == "patient")
    assert patient["probability"] == pytest.approx(report["patient"]["probability"]) and patient["n_nodes"] == len(p1_nodes)


def test_resume_keeps_finished_cases_and_redoes_changed_ones(cohort, tiny_bundle_dir, tmp_path):
    folder, manifest = cohort
    work = tmp_path / "cohort"
    shutil.copytree(folder, work, ignore=shutil.ignore_patterns("manifest.csv"))
    rows = manifest.read_text().splitlines()
    (work / "manifest.csv").write_text("\n".join(rows[:1] + rows[2:3]) + "\n")  # p2 only (relative paths)
    out = tmp_path / "run"
    first = run_cohort(work / "manifest.csv", out, tiny_bundle_dir)
    assert first.predicted == ["p2"] and first.skipped == []
    again = run_cohort(work / "manifest.csv", out, tiny_bundle_dir)
    assert again.predicted == [] and again.skipped == ["p2"]
    image = sitk.ReadImage(str(work / "p2" / "image.nrrd"))  # the same image, one voxel changed
    image[5, 5, 5] = image[5, 5, 5] + 7
    sitk.WriteImage(image, str(work / "p2" / "image.nrrd"))
    changed = run_cohort(work / "manifest.csv", out, tiny_bundle_dir)
    assert changed.predicted == ["p2"] and changed.skipped == []
    (out / "status" / "p2.json").unlink()  # interrupted after the case's folder, before its status
    assert run_cohort(work / "manifest.csv", out, tiny_bundle_dir).predicted == ["p2"]


def test_fingerprint_covers_model_and_options(cohort):
    _, manifest = cohort
    entry = read_manifest(manifest)[0]
    base = make_task(entry, manifest.parent / "out", "bundle", "a" * 64)
    assert fingerprint(base) == fingerprint(make_task(entry, manifest.parent / "out", "bundle", "a" * 64))
    assert fingerprint(base) != fingerprint(make_task(entry, manifest.parent / "out", "bundle", "b" * 64))
    assert fingerprint(base) != fingerprint(make_task(entry, manifest.parent / "out", "bundle", "a" * 64,
                                                      split_islands=True))


def test_never_writes_into_a_folder_of_other_files(cohort, tiny_bundle_dir, tmp_path, capsys):
    _, manifest = cohort
    (tmp_path / "mine.txt").write_text("user data")
    code = main(["predict-cohort", str(manifest), "--model", str(tiny_bundle_dir), "--quiet", "--out", str(tmp_path)])
    assert code == 2 and "other files" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_dask_local_cluster_gives_the_serial_results(cohort, tiny_bundle_dir, serial_run, tmp_path):
    distributed = pytest.importorskip("distributed", reason="the cluster extra (dask distributed) is not installed")
    _, manifest = cohort
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            run = run_cohort(manifest, tmp_path / "client", tiny_bundle_dir, client=client)
        # the command line with the scheduler's address
        assert main(["predict-cohort", str(manifest), "--model", str(tiny_bundle_dir), "--cluster",
                     cluster.scheduler_address, "--quiet", "--out", str(tmp_path / "address")]) == 0
    assert sorted(run.predicted) == ["p1", "p2"] and list(run.failed) == ["p3"]
    for out in (tmp_path / "client", tmp_path / "address"):
        assert _rows(out / "summary.csv") == _rows(serial_run / "summary.csv")
        for patient in ("p1", "p2"):
            mine = _without_timings(out / "cases" / patient / "report.json")
            assert mine == _without_timings(serial_run / "cases" / patient / "report.json")
            for name in ("gradcam.nrrd",):
                a = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "cases" / patient / name)))
                b = sitk.GetArrayFromImage(sitk.ReadImage(str(serial_run / "cases" / patient / name)))
                np.testing.assert_array_equal(a, b)
