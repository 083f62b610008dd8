"""Issue 11, the input-domain check: a bundle records its training domain; a case outside it is refused with
one line naming the mismatch, or, with --allow-out-of-domain, carries the warning beside the probability."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk

from LNMStagingLib.bundle import builtin_models_dir, load_bundle
from LNMStagingLib.bundle.domain import (
    DOMAIN_FILE,
    dataset_domain,
    domain_mismatches,
    require_dataset_in_domain,
)
from LNMStagingLib.cli.main import main
from LNMStagingLib.errors import BundleError
from LNMStagingLib.models.mil import ClinicalSpec
from LNMStagingLib.prediction.inputs import clinical_range_warnings

DEFAULT = builtin_models_dir() / "lidc-vae-mlp"


@pytest.fixture(scope="module")
def domain_bundle(tiny_bundle_dir, tmp_path_factory):
    """The tiny bundle with the domain of its own training data (synthetic blobs, one narrow intensity band)."""
    from LNMStagingLib.data.lidc import build_dataset
    from LNMStagingLib.synthetic.nodules import make_synthetic_nodules
    from LNMStagingLib.training.bundling import backfill_domain

    target = tmp_path_factory.mktemp("domain") / "tiny-with-domain"
    shutil.copytree(tiny_bundle_dir, target)
    arrays, diameters = make_synthetic_nodules(n_patients=30, seed=0)  # as training/tiny.py trains it
    backfill_domain(target, build_dataset(arrays, diameters, patch_size=32))
    return target


def _scaled(phantom_files, tmp_path, factor: float = 1.0, offset: float = 0.0):
    image = sitk.Cast(sitk.ReadImage(str(phantom_files.image)), sitk.sitkFloat32) * factor + offset
    path = tmp_path / f"scaled_{factor:g}_{offset:g}.nrrd"
    sitk.WriteImage(image, str(path))
    return path


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_backfilled_bundle_keeps_its_weights_and_verifies(domain_bundle, tiny_bundle_dir):
    bundle = load_bundle(domain_bundle)
    assert bundle.domain["patients"] == 30 and DOMAIN_FILE in bundle.manifest["files"]
    for member in (tiny_bundle_dir / "members").iterdir():
        assert (domain_bundle / "members" / member.name).read_bytes() == member.read_bytes()


def test_a_case_outside_the_domain_is_refused_then_carries_the_warning(domain_bundle, phantom_files, tmp_path):
    argv = ["predict", str(phantom_files.image), str(phantom_files.segmentation), "--model", str(domain_bundle),
            "--quiet", "--out", str(tmp_path / "out")]
    code, _, err = _run(argv)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "outside the input domain of bundle tiny-synthetic" in err and "mean intensity inside the nodes" in err
    assert not (tmp_path / "out").exists()
    code, printed, _ = _run(argv + ["--allow-out-of-domain"])
    assert code == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    warnings = report["patient"]["input_warnings"]
    assert warnings and warnings[0].startswith("OUT OF THE MODEL'S INPUT DOMAIN: mean intensity inside the nodes")
    probability_line = printed.splitlines().index(next(line for line in printed.splitlines()
                                                        if line.startswith("patient: probability")))
    # beside the probability: among the caution/warning lines printed right under it (the intended-input caveat
    # of issue 10 may come first), before anything else
    under = printed.splitlines()[probability_line + 1:]
    beside = under[:next((i for i, line in enumerate(under) if not line.lstrip().startswith(("caution:", "warning:"))), len(under))]
    assert any("OUT OF THE MODEL'S INPUT DOMAIN" in line for line in beside), under[:4]
    html = (tmp_path / "out" / "report.html").read_text()
    assert html.index("OUT OF THE MODEL&#x27;S INPUT DOMAIN") < html.index("Clinical data:")
    assert report["model"]["path"] == str(domain_bundle.resolve())


def test_a_bundle_without_domain_says_so(tiny_bundle_dir, phantom_files, tmp_path):
    code, printed, _ = _run(["predict", str(phantom_files.image), str(phantom_files.segmentation), "--model",
                             str(tiny_bundle_dir), "--quiet", "--out", str(tmp_path / "out")])
    assert code == 0 and "input domain not checked" in printed
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["patient"]["input_warnings"][0].startswith("input domain not checked")


@pytest.mark.skipif(not (DEFAULT / DOMAIN_FILE).is_file(), reason="the bundled default model is not in this checkout")
@pytest.mark.parametrize("factor, offset, refused", [(1.0, 0.0, False), (4.0, 0.0, True), (10.0, 0.0, True),
                                                      (0.001, 0.0, True), (1.0, -1000.0, True)])
def test_default_bundle_refuses_rescaled_images(phantom_files, tmp_path, factor, offset, refused):
    code, _, err = _run(["predict", str(_scaled(phantom_files, tmp_path, factor, offset)),
                         str(phantom_files.segmentation), "--quiet", "--out", str(tmp_path / "out")])
    assert code == (2 if refused else 0), err
    if refused:
        assert "outside the input domain of bundle lidc-vae-mlp" in err


@pytest.mark.skipif(not (DEFAULT / DOMAIN_FILE).is_file(), reason="the bundled default model is not in this checkout")
def test_default_bundle_domain_accepts_its_own_training_data(lidc_dir):
    from LNMStagingLib.data.lidc import load_lidc

    bundle = load_bundle(DEFAULT)
    dataset = load_lidc(lidc_dir)
    summary = dataset_domain(bundle.domain, dataset.patches, dataset.masks, dataset.patient_id, dataset.mm_per_px)
    assert summary["patients"] == 395 and summary["fraction_out_of_domain"] <= 0.01
    require_dataset_in_domain(summary, str(lidc_dir), bundle.name, allow=False)
    scaled = np.clip(dataset.patches * 4, 0, 1)  # the same data 4x brighter: the clamp saturates the nodes
    summary = dataset_domain(bundle.domain, scaled, dataset.masks, dataset.patient_id, dataset.mm_per_px)
    with pytest.raises(BundleError, match="patients are outside the input domain"):
        require_dataset_in_domain(summary, str(lidc_dir), bundle.name, allow=False)


def test_evaluate_and_clusters_check_the_domain(domain_bundle, tmp_path):
    from LNMStagingLib.synthetic.nodules import make_synthetic_nodules

    arrays, _ = make_synthetic_nodules(n_patients=12, seed=3)
    arrays["images"] = (arrays["images"].astype(np.float32) * 0.2).astype(np.uint8)  # a darker scanner
    data = tmp_path / "dark"
    data.mkdir()
    np.savez_compressed(data / "nodules.npz", **arrays)
    code, _, err = _run(["evaluate", "--model", str(domain_bundle), "--data", str(data), "--bootstrap", "10",
                         "--out", str(tmp_path / "metrics.json")])
    assert code == 2 and "patients are outside the input domain" in err and not (tmp_path / "metrics.json").exists()
    code, _, err = _run(["evaluate", "--model", str(domain_bundle), "--data", str(data), "--bootstrap", "10",
                         "--allow-out-of-domain", "--out", str(tmp_path / "metrics.json")])
    assert code == 0, err
    assert json.loads((tmp_path / "metrics.json").read_text())["input_domain"]["patients_out_of_domain"] == 12
    code, _, err = _run(["explain", "clusters", "--model", str(domain_bundle), "--data", str(data), "--no-progress",
                         "--out", str(tmp_path / "clusters")])
    assert code == 2 and "patients are outside the input domain" in err


def test_mismatches_name_the_statistic_and_the_training_range():
    domain = {"compared": ["inside"], "margin": 0.25, "spacing_mm": [0.5, 1.0],
              "patient_medians": {"inside": {"q01": 0.4, "q99": 0.9}}}
    masks = np.zeros((2, 8, 8), bool)
    masks[:, 2:6, 2:6] = True
    assert domain_mismatches(domain, np.full((2, 8, 8), 0.6), masks, 0.8) == []
    found = domain_mismatches(domain, np.full((2, 8, 8), 0.05), masks, 3.0)
    assert found[0].startswith("mean intensity inside the nodes 0.05") and "0.4 to 0.9" in found[0]
    assert found[1].startswith("pixel spacing 3 mm")


def test_ages_outside_the_trained_range_are_said():
    bundle = SimpleNamespace(config=SimpleNamespace(clinical_inputs=[ClinicalSpec("age", 18.0, 100.0)]))
    assert clinical_range_warnings(bundle, {"age": 64.0}) == []
    assert clinical_range_warnings(bundle, {"age": 12.0}) == [
        "age 12 lies outside the model's trained range 18-100: the model received 18"]
