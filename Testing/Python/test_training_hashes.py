"""Members record the hash of their training patients; the encoder-reuse proof uses it, or the feature scaler for
bundles written before it; a hashed copy of an earlier bundle is written beside it, never in place."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from LNMStagingLib.bundle import load_bundle, rehash_manifest, training_set_sha256
from LNMStagingLib.data.lidc import build_dataset
from LNMStagingLib.data.splits import patient_folds
from LNMStagingLib.errors import BundleError
from LNMStagingLib.evaluation.encoder_reuse import add_training_hashes, check_fold_encoders
from LNMStagingLib.evaluation.evaluate import calibration_summary
from LNMStagingLib.synthetic.nodules import make_synthetic_nodules, write_synthetic_dataset

SHIPPED = Path(__file__).resolve().parents[2] / "Resources" / "Models" / "lidc-vae-mlp"


@pytest.fixture(scope="module")
def tiny_data():
    """The tiny bundle's training data and its fold split (LNMStagingLib/training/tiny.py, seed 0)."""
    arrays, diameters = make_synthetic_nodules(n_patients=30, seed=0)
    dataset = build_dataset(arrays, diameters, patch_size=32)
    labels = dataset.patient_labels()
    folds = patient_folds(dataset.patients, [labels[p] for p in dataset.patients], 2, 0)
    return dataset, folds


def _without_hashes(source: Path, target: Path) -> Path:
    """A copy of a bundle as written before members recorded their training hashes."""
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text(encoding="utf-8"))
    for member in config["members"]:
        member.pop("training_patients_sha256", None)
    (target / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    rehash_manifest(target, json.loads((source / "manifest.json").read_text(encoding="utf-8")))
    return target


def test_the_hash_depends_on_the_set_of_patients_only():
    assert training_set_sha256(["b", "a", "a"]) == training_set_sha256(["a", "b"])
    assert training_set_sha256(["a", "b"]) != training_set_sha256(["a", "c"])
    assert len(training_set_sha256([])) == 64


def test_every_member_of_a_new_bundle_records_its_training_patients(tiny_bundle, tiny_data):
    dataset, folds = tiny_data
    specs = tiny_bundle.config.members
    assert specs[0].training_patients_sha256 == training_set_sha256(dataset.patients)
    assert specs[1].training_patients_sha256 == training_set_sha256(folds[specs[1].fold][0])
    assert check_fold_encoders(tiny_bundle, dataset, folds) == {0: "training_patients_sha256"}


def test_the_hash_proof_survives_a_feature_change_and_refuses_other_folds(tiny_bundle, tiny_data, tmp_path):
    dataset, folds = tiny_data
    changed = build_dataset(*make_synthetic_nodules(n_patients=30, seed=0), patch_size=32)
    changed.features[:] = changed.features * 1.5 + 0.25  # every feature measured differently
    assert check_fold_encoders(tiny_bundle, changed, folds) == {0: "training_patients_sha256"}
    with pytest.raises(BundleError, match="training-patient hash differs"):
        check_fold_encoders(tiny_bundle, dataset, folds[::-1])
    old = load_bundle(_without_hashes(Path(tiny_bundle.path), tmp_path / "old"))
    assert check_fold_encoders(old, dataset, folds) == {0: "feature_scaler"}
    with pytest.raises(BundleError, match="feature ranges differ"):  # why the hash is needed
        check_fold_encoders(old, changed, folds)


def test_a_hashed_copy_is_proven_first_and_leaves_the_source_alone(tiny_bundle, tiny_data, tmp_path):
    dataset, folds = tiny_data
    source = _without_hashes(Path(tiny_bundle.path), tmp_path / "old")
    before = {p.name: p.read_bytes() for p in source.rglob("*") if p.is_file()}
    proofs = add_training_hashes(source, dataset, folds, tmp_path / "hashed")
    assert proofs == {0: "feature_scaler"}
    assert {p.name: p.read_bytes() for p in source.rglob("*") if p.is_file()} == before
    copy = load_bundle(tmp_path / "hashed")
    assert [m.training_patients_sha256 for m in copy.config.members] == \
        [m.training_patients_sha256 for m in tiny_bundle.config.members]
    assert (tmp_path / "hashed" / "members" / "member_1.safetensors").read_bytes() == \
        (source / "members" / "member_1.safetensors").read_bytes()
    with pytest.raises(BundleError, match="new folder"):
        add_training_hashes(source, dataset, folds, tmp_path / "hashed")
    other = build_dataset(*make_synthetic_nodules(n_patients=30, seed=0), patch_size=32)
    other.features[:] = other.features + 0.5
    with pytest.raises(BundleError, match="feature ranges differ"):
        add_training_hashes(source, other, folds, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def _written_before_heads_and_hashes(source: Path, out: Path) -> Path:
    """A copy of ``source`` in the format of bundles written before the heads and hashes (lidc-vae-mlp 1.1.0 and
    earlier): no ``training_patients_sha256`` / ``head_calibrations`` member keys, no ``heads.*`` tensors."""
    from safetensors.numpy import load_file, save_file

    shutil.copytree(source, out)
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    for member in config["members"]:
        member.pop("training_patients_sha256", None)
        member.pop("head_calibrations", None)
        weights = out / member["file"]
        save_file({k: v for k, v in load_file(weights).items() if not k.startswith("heads.")}, weights)
    (out / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    rehash_manifest(out, json.loads((source / "manifest.json").read_text(encoding="utf-8")))
    return out


def test_a_bundle_written_before_the_hashes_and_heads_still_loads(tmp_path):
    if not (SHIPPED / "manifest.json").is_file():
        pytest.skip("the bundled model Resources/Models/lidc-vae-mlp is not in this checkout")
    shipped = load_bundle(SHIPPED)  # today's: every member with its hash and its calibrated heads
    assert all(m.training_patients_sha256 for m in shipped.config.members)
    assert all(spec.n_heads > 0 for spec in shipped.config.members)
    assert calibration_summary(shipped)["method"].startswith("each member's patient probability is the mean")
    bundle = load_bundle(_written_before_heads_and_hashes(SHIPPED, tmp_path / "earlier"))
    assert all(m.training_patients_sha256 is None for m in bundle.config.members)
    assert all(c.method == "platt" and not c.is_identity for c in bundle.ensemble.calibrations)
    assert all(spec.n_heads == 0 for spec in bundle.config.members) and np.isfinite(bundle.threshold)
    summary = calibration_summary(bundle)  # what evaluate reports under patient.calibration
    assert summary["method"].startswith("Platt scaling of each member") and len(summary["members"]) == 6
    assert all(m["method"] == "platt" for m in summary["members"])


def test_the_lidc_final_recipe_refuses_a_folder_of_other_files_before_any_work(tmp_path, capsys):
    """`train --lidc-final` once replaced its --out folder whatever it held: now a non-empty folder is refused
    with one line (exit 2) before any training, and its files are left as they were."""
    from LNMStagingLib.cli.main import main

    data = write_synthetic_dataset(tmp_path / "lidc-layout", n_patients=12, seed=0)  # readable LIDC-layout data
    out = tmp_path / "my-documents"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    code = main(["train", "--lidc-final", "--quick", "--data", str(data), "--out", str(out)])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and "not empty" in error[0]
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine" and len(list(out.iterdir())) == 1
    assert not list(tmp_path.glob(".my-documents.*"))  # no build folder left beside it
