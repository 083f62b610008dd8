"""Command line: evaluate (metrics.json contract), train, benchmark; LIDC checks skip without the data."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from LNMStagingLib.cli.main import main
from LNMStagingLib.synthetic.nodules import write_synthetic_dataset
from LNMStagingLib.training.tiny import build_tiny_bundle

METRIC_KEYS = {"auc", "sensitivity", "specificity", "accuracy", "f1", "balanced_accuracy"}


# tiny tensors: one torch thread is faster, and steadier on a busy 2-core machine
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("bundles") / "tiny", seed=1)


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("data") / "synthetic", n_patients=40, seed=11)


def test_evaluate_writes_the_metrics_contract(tiny, synthetic_data, tmp_path):
    out = tmp_path / "metrics.json"
    assert main(["evaluate", "--model", str(tiny), "--data", str(synthetic_data), "--out", str(out),
                 "--bootstrap", "50"]) == 0
    metrics = json.loads(out.read_text())
    for level in ("nodule", "patient"):
        assert METRIC_KEYS <= set(metrics[level])
        assert 0.0 <= metrics[level]["auc"] <= 1.0
    assert metrics["model"]["name"] == "tiny-synthetic" and metrics["model"]["members"] == 2
    assert metrics["patient"]["n"] == metrics["data"]["patients"]
    # the share flagged uncertain, judged as `predict` does, and the per-member calibration applied
    assert 0.0 <= metrics["patient"]["uncertain_fraction"] <= 1.0
    assert metrics["patient"]["uncertain_patients"] == round(metrics["patient"]["uncertain_fraction"]
                                                             * metrics["patient"]["n"])
    calibration = metrics["patient"]["calibration"]
    # each member: the mean of its inner-fold heads, each Platt-calibrated on its own held-out patients
    assert "held-out inner fold" in calibration["method"] and len(calibration["members"]) == 2
    assert all(len(m["heads"]) == 2 and all(c["method"] == "platt" and c["fitted_on"] > 0 for c in m["heads"])
               for m in calibration["members"])


def test_evaluate_flags_patients_the_bundle_trained_on(tiny, synthetic_data, tmp_path, capsys):
    # the tiny bundle trained on synthetic patients synth000..synth029; this data set reuses those ids for 30
    # of its 40 patients, so 30 are flagged (ids, not images, are what the bundle records)
    out = tmp_path / "metrics.json"
    assert main(["evaluate", "--model", str(tiny), "--data", str(synthetic_data), "--out", str(out),
                 "--bootstrap", "20"]) == 0
    data = json.loads(out.read_text())["data"]
    assert data["patients"] == 40 and data["patients_seen_in_training"] == 30
    assert "30 of 40 patients" in capsys.readouterr().err

    unseen = write_synthetic_dataset(tmp_path / "unseen", n_patients=40, seed=11)
    npz = dict(np.load(unseen / "nodules.npz"))
    npz["patient_id"] = np.char.replace(npz["patient_id"], "synth", "other")
    np.savez_compressed(unseen / "nodules.npz", **npz)
    out_unseen = tmp_path / "unseen.json"
    assert main(["evaluate", "--model", str(tiny), "--data", str(unseen), "--out", str(out_unseen),
                 "--bootstrap", "20"]) == 0
    assert json.loads(out_unseen.read_text())["data"]["patients_seen_in_training"] == 0
    assert "in-sample" not in capsys.readouterr().err


def test_evaluate_uses_the_default_bundle(tiny, synthetic_data, tmp_path, monkeypatch):
    monkeypatch.setenv("LNMSTAGING_MODEL_PATH", str(tiny.parent))
    monkeypatch.setenv("LNMSTAGING_DEFAULT_MODEL", "tiny-synthetic")
    out = tmp_path / "m.json"
    assert main(["evaluate", "--data", str(synthetic_data), "--out", str(out), "--bootstrap", "20"]) == 0
    assert json.loads(out.read_text())["model"]["path"] == str(tiny.resolve())


def test_evaluate_refuses_an_altered_bundle(tiny, synthetic_data, tmp_path, capsys):
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny, damaged)
    card = damaged / "model_card.json"
    card.write_text(card.read_text().replace("tiny", "tinY", 1))
    code = main(["evaluate", "--model", str(damaged), "--data", str(synthetic_data), "--out", str(tmp_path / "x.json")])
    assert code == 2
    err = capsys.readouterr().err
    assert "model_card.json" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.json").exists()


def test_evaluate_reports_bad_data_as_one_line(tiny, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", "--model", str(tiny), "--data", str(tmp_path / "empty"), "--out",
                 str(tmp_path / "m.json")]) == 2
    assert "nodules.npz" in capsys.readouterr().err


def test_train_quick_writes_a_loadable_bundle(synthetic_data, tmp_path):
    from LNMStagingLib.bundle import load_bundle

    out = tmp_path / "my-model"
    assert main(["train", "--data", str(synthetic_data), "--out", str(out), "--quick", "--members", "2",
                 "--no-progress", "--threads", "1"]) == 0
    bundle = load_bundle(out)
    assert bundle.name == "my-model" and bundle.n_members == 3
    assert [m.role for m in bundle.config.members] == ["final", "fold", "fold"]
    # a second run refuses to overwrite
    assert main(["train", "--data", str(synthetic_data), "--out", str(out), "--quick", "--no-progress"]) == 2


def test_train_vae_then_classifier(synthetic_data, tmp_path):
    from LNMStagingLib.bundle import load_bundle

    vae_dir = tmp_path / "vae"
    assert main(["train", "--data", str(synthetic_data), "--out", str(vae_dir), "--stage", "vae", "--quick",
                 "--no-progress", "--threads", "1"]) == 0
    assert (vae_dir / "encoder.safetensors").is_file()
    out = tmp_path / "clf"
    assert main(["train", "--data", str(synthetic_data), "--out", str(out), "--stage", "classifier",
                 "--encoder", str(vae_dir), "--quick", "--no-progress", "--threads", "1"]) == 0
    bundle = load_bundle(out)
    from safetensors.torch import load_file

    encoder = load_file(str(vae_dir / "encoder.safetensors"))
    member = bundle.ensemble.members[0].vae.state_dict()
    key = "encoder.blocks.0.0.weight"
    assert torch.allclose(member[key], encoder[key].float(), atol=1e-2)  # float16 bundle weights


def test_benchmark_quick_runs_all_methods_on_the_same_folds(synthetic_data, tmp_path):
    from LNMStagingLib.evaluation.benchmark import run_benchmark

    out = tmp_path / "bench"
    methods = ("area", "logreg", "size", "vae")
    path = run_benchmark(synthetic_data, out, methods=methods, n_folds=2, quick=True, progress=False,
                         command="test", log=lambda *_: None, n_boot=50)
    table = path.read_text(encoding="utf-8")
    assert "Size-only" in table and "VAE-MLP (Gaussian)" in table and "Wall time" in table
    assert "Largest lesion area (pixels)" in table and "Logistic regression on five simple features" in table
    assert "fold mean" in table and "pooled" in table
    summary = json.loads((out / "summary.json").read_text())
    for other in ("area", "logreg", "size"):  # paired bootstrap of the VAE-MLP's AUC difference, every patient
        comparison = summary["comparisons"][other]
        assert comparison["patients"] == 40
        assert comparison["ci95"][0] <= comparison["pooled_difference"] <= comparison["ci95"][1]
    vae_fold = json.loads((out / "vae" / "fold_0" / "result.json").read_text())
    assert vae_fold["selection"]["calibration"]["method"] == "platt"
    assert "passed" in vae_fold["selection"]["quality_gate"]
    tests = {}
    for method in methods:
        for k in range(2):
            result = json.loads((out / method / f"fold_{k}" / "result.json").read_text())
            assert not set(result["train_patients"]) & set(result["test_patients"])
            tests.setdefault(k, set()).add(tuple(result["test_patients"]))
    assert all(len(v) == 1 for v in tests.values())  # same folds for every method
    mtime = (out / "vae" / "fold_0" / "result.json").stat().st_mtime
    run_benchmark(synthetic_data, out, methods=methods, n_folds=2, quick=True, progress=False,
                  command="test", log=lambda *_: None, n_boot=50)
    assert (out / "vae" / "fold_0" / "result.json").stat().st_mtime == mtime  # resumed, not redone


def test_lidc_adapter(lidc_dir):
    from LNMStagingLib.data.lidc import load_lidc

    dataset = load_lidc(lidc_dir)
    assert dataset.patches.shape == (4053, 1, 32, 32)
    assert len(dataset.patients) == 395 and sum(dataset.patient_labels().values()) == 158
    assert 20 < dataset.fov_mm() < 80
    assert (dataset.features[:, 0] <= dataset.features[:, 1] + 1e-6).all()  # short <= long axis
    assert float(dataset.patches.max()) <= 1.0 and (dataset.patches[:, 0][~dataset.masks] == 0).all()


def test_default_bundle_evaluates_1000_lidc_patches_in_seconds(lidc_dir, tmp_path):
    import numpy as np

    from LNMStagingLib.bundle import builtin_models_dir, list_bundles

    if not any(b.path.parent == builtin_models_dir().resolve() for b in list_bundles()):
        pytest.skip("no bundled model in Resources/Models yet")
    with np.load(lidc_dir / "nodules.npz") as data:
        arrays = {k: data[k] for k in data.files}
    patients = np.unique(arrays["patient_id"])
    keep = np.isin(arrays["patient_id"], patients[:100])
    keep &= np.cumsum(keep) <= 1000
    subset = tmp_path / "subset"
    subset.mkdir()
    np.savez(subset / "nodules.npz", **{k: v[keep] for k, v in arrays.items()})
    shutil.copy(lidc_dir / "nodules.csv", subset / "nodules.csv")
    start = time.time()
    assert main(["evaluate", "--data", str(subset), "--out", str(tmp_path / "m.json"), "--bootstrap", "100"]) == 0
    assert time.time() - start < 60
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["data"]["slices"] <= 1000 and metrics["nodule"]["auc"] > 0.7


@pytest.fixture(scope="module")
def phantom_cohort(tmp_path_factory) -> Path:
    """A user's cohort of 8 phantom cases: manifest with clinical data (some values missing) and N stages."""
    import csv

    from LNMStagingLib.synthetic.phantom import write_phantom

    root = tmp_path_factory.mktemp("cohort")
    rows = []
    for i in range(8):
        write_phantom(root / f"p{i}", extra_nodes=i % 3, seed=i)
        rows.append({"patient_id": f"P{i}", "image": f"p{i}/image.nrrd", "segmentation": f"p{i}/segmentation.seg.nrrd",
                     "age": "" if i == 0 else str(50 + i), "sex": "F" if i % 2 else "M",
                     "t_stage": "" if i == 1 else f"T{1 + i % 4}", "n_stage": "N1" if i % 2 else "N0"})
    with open(root / "cohort.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root / "cohort.csv"


@pytest.fixture(scope="module")
def cohort_bundle(phantom_cohort, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cohort_model") / "model"
    assert main(["train", "--manifest", str(phantom_cohort), "--preset", "ct", "--fov-mm", "30", "--out",
                 str(out), "--quick", "--no-progress", "--threads", "1"]) == 0
    return out


def test_train_on_a_cohort_manifest_with_clinical_data(cohort_bundle):
    """A user's cohort (phantom cases): clinical inputs with missing values reach the patient MLP."""
    import numpy as np

    from LNMStagingLib.bundle import load_bundle

    out = cohort_bundle
    bundle = load_bundle(out)
    assert [c.name for c in bundle.config.clinical_inputs] == ["age", "sex", "t_stage"]
    assert bundle.config.masked_input is False  # the ct preset keeps the surroundings
    features = np.tile([6.0, 8.0, 0.75, 0.95, 1.1], (3, 1))
    patches = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    from LNMStagingLib.data.bags import Bag

    known = Bag.from_patches(patches, features, [1, 1, 2], clinical={"age": 70, "sex": 1.0, "t_stage": 3.0})
    missing = Bag.from_patches(patches, features, [1, 1, 2], clinical={})
    p_known = bundle.ensemble.outputs_of_bag(known)["patient_mlp"]
    p_missing = bundle.ensemble.outputs_of_bag(missing)["patient_mlp"]
    assert not np.allclose(p_known.numpy(), p_missing.numpy())


def test_evaluate_on_a_cohort_gives_the_probabilities_of_predict(cohort_bundle, phantom_cohort, tmp_path, capsys):
    out, rows_csv = tmp_path / "metrics.json", tmp_path / "patients.csv"
    assert main(["evaluate", "--model", str(cohort_bundle), "--manifest", str(phantom_cohort), "--out", str(out),
                 "--predictions", str(rows_csv), "--bootstrap", "20", "--no-progress"]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["nodule"] is None and METRIC_KEYS <= set(metrics["patient"])
    assert metrics["patient"]["n"] == 8 and metrics["patient"]["n_positive"] == 4
    assert metrics["data"]["patients_seen_in_training"] == 8  # trained on this very cohort
    assert "8 of 8 patients" in capsys.readouterr().err
    import csv

    with open(rows_csv, newline="") as handle:
        rows = {row["patient_id"]: row for row in csv.DictReader(handle)}
    assert sorted(rows) == [f"P{i}" for i in range(8)] and rows["P3"]["n_stage_label"] == "1"

    # the same patient through `predict` (with its clinical data) gives the same probability
    case = phantom_cohort.parent / "p3"
    assert main(["predict", str(case / "image.nrrd"), str(case / "segmentation.seg.nrrd"), "--age", "53", "--sex", "F",
                 "--t-stage", "T4", "--model", str(cohort_bundle), "--out", str(tmp_path / "p3")]) == 0
    report = json.loads((tmp_path / "p3" / "report.json").read_text())
    assert abs(report["patient"]["probability"] - float(rows["P3"]["probability"])) < 1e-5


def test_evaluate_on_a_cohort_refuses_a_broken_case(cohort_bundle, phantom_cohort, tmp_path, capsys):
    manifest = tmp_path / "cohort.csv"
    text = phantom_cohort.read_text().replace("p2/image.nrrd", str(tmp_path / "missing.nrrd"))
    manifest.write_text(text.replace("p0/", f"{phantom_cohort.parent}/p0/").replace("p1/", f"{phantom_cohort.parent}/p1/"))
    code = main(["evaluate", "--model", str(cohort_bundle), "--manifest", str(manifest), "--out",
                 str(tmp_path / "m.json"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "missing.nrrd" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.json").exists()


def test_benchmark_on_a_cohort_has_patient_rows_and_the_clinical_ablation(phantom_cohort, tmp_path):
    out = tmp_path / "bench"
    assert main(["benchmark", "cohort", "--manifest", str(phantom_cohort), "--preset", "ct", "--fov-mm", "30",
                 "--out", str(out), "--methods", "size,vae,vae_no_clinical", "--folds", "2", "--quick",
                 "--no-progress", "--threads", "1"]) == 0
    table = (out / "benchmark.md").read_text(encoding="utf-8")
    assert "Cohort benchmark (cohort.csv, preset ct)" in table and "2-fold" in table
    assert "VAE-MLP without clinical data (ablation)" in table and "n/a (no node labels)" in table
    for k in range(2):
        with_clinical = json.loads((out / "vae" / f"fold_{k}" / "result.json").read_text())
        without = json.loads((out / "vae_no_clinical" / f"fold_{k}" / "result.json").read_text())
        assert with_clinical["test_patients"] == without["test_patients"]
        assert not set(with_clinical["train_patients"]) & set(with_clinical["test_patients"])
        assert with_clinical["nodule"] is None
    fitted = json.loads((out / "vae_no_clinical" / "fold_0" / "model" / "fitted.json").read_text())
    assert fitted["mil"]["use_clinical"] is False
    assert json.loads((out / "vae" / "fold_0" / "model" / "fitted.json").read_text())["mil"]["use_clinical"] is True


def test_train_refuses_a_config_that_is_not_an_object(synthetic_data, tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text("[1, 2]")
    code = main(["train", "--data", str(synthetic_data), "--config", str(config), "--out", str(tmp_path / "m"),
                 "--quick", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "config.json" in err and not (tmp_path / "m").exists()
    encoder = tmp_path / "vae"
    encoder.mkdir()
    (encoder / "encoder.json").write_text('{"method": "vae"}')
    code = main(["train", "--data", str(synthetic_data), "--stage", "classifier", "--encoder", str(encoder),
                 "--out", str(tmp_path / "m"), "--quick", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "encoder.json" in err


def test_evaluate_warns_when_a_level_has_one_class(tiny, synthetic_data, tmp_path, capsys):
    data = tmp_path / "negatives"
    shutil.copytree(synthetic_data, data)
    arrays = dict(np.load(data / "nodules.npz"))
    arrays["slice_label"] = np.zeros_like(arrays["slice_label"])
    np.savez_compressed(data / "nodules.npz", **arrays)
    assert main(["evaluate", "--model", str(tiny), "--data", str(data), "--out", str(tmp_path / "m.json"),
                 "--bootstrap", "10"]) == 0
    err = capsys.readouterr().err
    assert "only one class at the nodule level" in err and "only one class at the patient level" in err
    assert json.loads((tmp_path / "m.json").read_text())["patient"]["auc"] is None  # strict JSON: null, not NaN
