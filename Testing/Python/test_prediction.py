"""`predict_case` and `lnmstaging predict` on the phantom with the tiny real bundle: the report contract,
Grad-CAM on the image grid, traversals, the HTML page, determinism, clinical data, and refused input."""

from __future__ import annotations

import contextlib
import io
import json
import re

import numpy as np
import pytest
import SimpleITK as sitk

from LNMStagingLib.cli.main import main
from LNMStagingLib.errors import CancelledError
from LNMStagingLib.io.atomic import OUTPUT_LISTING
from LNMStagingLib.prediction import predict_case
from LNMStagingLib.prediction.traversal import TRAVERSAL_STEPS

NODE_KEYS = {"node_id", "segment_name", "probability", "std", "short_axis_mm", "long_axis_mm", "axis_ratio",
             "convexity", "compactness", "criteria"}


@pytest.fixture(scope="module")
def cli_run(phantom_files, tiny_bundle_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("predict") / "result"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["predict", str(phantom_files.image), str(phantom_files.segmentation), "--model",
                     str(tiny_bundle_dir), "--age", "71", "--quiet", "--out", str(out)])
    return code, out, printed.getvalue()


def test_cli_writes_every_output(cli_run):
    code, out, printed = cli_run
    assert code == 0
    assert {p.name for p in out.iterdir()} == {"report.json", "gradcam.nrrd", "traversal", "report.html", OUTPUT_LISTING}
    assert not list(out.parent.glob(".*partial*"))
    # the printed probability comes with the model's data, intended use and "research use only"
    assert "patient: probability" in printed
    context = next(line for line in printed.splitlines() if line.startswith("model tiny-synthetic"))
    assert "make_synthetic_nodules" in context and "Software tests" in context
    assert "Research use only" in context


def test_report_json_contract(cli_run, tiny_bundle):
    report = json.loads((cli_run[1] / "report.json").read_text())
    model = report["model"]
    assert model["name"] == tiny_bundle.name and model["version"] == tiny_bundle.version
    assert model["manifest_sha256"] == tiny_bundle.manifest_sha256
    patient = report["patient"]
    for key in ("probability", "decision", "threshold", "std", "uncertain", "uncertainty_reasons", "clinical"):
        assert key in patient
    assert 0.0 <= patient["probability"] <= 1.0
    assert patient["positive"] is (patient["probability"] >= patient["threshold"])
    in_range = 0.33 <= patient["probability"] <= 0.66
    assert patient["uncertain"] is (in_range or any("disagrees" in r for r in patient["uncertainty_reasons"]))
    for holder in (report, patient):  # every probability travels with its context
        assert holder["research_use_only"] is True and holder["intended_use"] and holder["model_data"]
    assert len(report["nodes"]) == 7
    for node in report["nodes"]:
        assert NODE_KEYS <= set(node)
        assert set(node["criteria"]) == {"esgar", "lateral_short_axis_7mm", "sets"}
        assert node["criteria"]["sets"]["esgar_2016"] is node["criteria"]["esgar"]["suspicious"]
        assert 0.0 <= node["probability"] <= 1.0 and node["std"] >= 0.0
    names = [n["segment_name"] for n in report["nodes"]]
    assert names[0] == "Node small round" and "Lateral node" in names


def test_clinical_data_not_used_by_this_model_is_said(cli_run):
    clinical = json.loads((cli_run[1] / "report.json").read_text())["patient"]["clinical"]
    assert clinical["used_by_model"] == [] and "not used by this model" in clinical["note"]
    assert "age" in clinical["note"]  # given but ignored is said, not hidden


def test_missing_clinical_values_are_declared_not_zero():
    from types import SimpleNamespace

    from LNMStagingLib.io.cohort import ClinicalData
    from LNMStagingLib.models.mil import PAPER_CLINICAL, ClinicalSpec, clinical_vector
    from LNMStagingLib.prediction.inputs import clinical_inputs

    specs = [{"name": s.name, "minimum": s.minimum, "maximum": s.maximum} for s in PAPER_CLINICAL]
    fake = SimpleNamespace(config=SimpleNamespace(clinical_inputs=[ClinicalSpec(**s) for s in specs]))
    values, use = clinical_inputs(fake, ClinicalData(age=64, t_stage="T3"))
    assert values == {"age": 64.0, "sex": None, "t_stage": 3.0}
    assert use.declared_missing == ["sex"] and "sex" in use.note and "never a silent zero" in use.note
    vector = clinical_vector([ClinicalSpec(**s) for s in specs], values)
    assert list(vector[2:4]) == [0.5, 1.0]  # neutral value + missingness indicator for sex


def test_gradcam_is_on_the_input_grid_and_on_the_nodes(cli_run, phantom_files, phantom_prediction):
    heat = sitk.ReadImage(str(cli_run[1] / "gradcam.nrrd"))
    image = sitk.ReadImage(str(phantom_files.image))
    assert heat.GetSize() == image.GetSize()
    assert np.allclose(heat.GetSpacing(), image.GetSpacing()) and np.allclose(heat.GetOrigin(), image.GetOrigin())
    assert np.allclose(heat.GetDirection(), image.GetDirection())
    array = sitk.GetArrayFromImage(heat)
    assert array.dtype == np.float32 and np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1.0 + 1e-6
    # zero away from the node patches: only on each node's primary slice, within its patch field of view
    half_fov_px = phantom_prediction.input_info["patch_pixel_mm"] * 32 / 2 / image.GetSpacing()[0] + 1
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(phantom_files.labelmap)))
    allowed = np.zeros(array.shape, bool)
    for node in phantom_prediction.nodes:
        k = phantom_prediction.node_patches[node.node_id].slice_index
        _, jj, ii = np.nonzero(labels == node.node_id)
        cj, ci = jj.mean(), ii.mean()
        j, i = np.mgrid[0:array.shape[1], 0:array.shape[2]]
        allowed[k] |= (np.abs(j - cj) <= half_fov_px) & (np.abs(i - ci) <= half_fov_px)
        assert array[k][labels[k] == node.node_id].max() > 0, node.segment_name  # each node carries heat
    assert np.count_nonzero(array[~allowed]) == 0
    assert np.array_equal(array, phantom_prediction.heatmap)


def test_traversal_files(cli_run, phantom_prediction):
    folder = cli_run[1] / "traversal"
    from PIL import Image

    for node in phantom_prediction.nodes:
        for direction in ("growth", "border_irregularity"):
            stem = f"node_{node.node_id:03d}_{direction}"
            stack = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"{stem}.nrrd")))
            assert stack.shape == (len(TRAVERSAL_STEPS), 32, 32)
            with Image.open(folder / f"{stem}.png") as strip:
                assert strip.width > strip.height * (len(TRAVERSAL_STEPS) - 1)
            frames = phantom_prediction.traversals[node.node_id][direction]
            assert frames.shape == stack.shape and frames.dtype == np.float32


def test_html_is_self_contained(cli_run):
    html = (cli_run[1] / "report.html").read_text()
    assert "Research use only" in html and "Not a medical device" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    assert html.count("data:image/png;base64,") >= 7 * 5  # patch, heatmap, top 25 %, two strips per node
    assert "Node lobulated" in html and "ESGAR" in html and "Model" in html


def test_prediction_is_deterministic(phantom_case, tiny_bundle, phantom_prediction, cli_run):
    again = predict_case(phantom_case, bundle=tiny_bundle).to_report_dict()
    first = phantom_prediction.to_report_dict()
    for report in (again, first):
        report.pop("timings_s")
    assert again == first
    from_cli = json.loads((cli_run[1] / "report.json").read_text())
    assert [n["probability"] for n in from_cli["nodes"]] == [n["probability"] for n in first["nodes"]]
    assert from_cli["patient"]["probability"] == first["patient"]["probability"]


def test_progress_and_cancel(phantom_case, tiny_bundle):
    seen = []
    predict_case(phantom_case, bundle=tiny_bundle, progress=lambda f, m: seen.append(f))
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)
    checks = []

    def cancel() -> bool:
        checks.append(1)
        return len(checks) > 3  # the user cancels during the run

    with pytest.raises(CancelledError):
        predict_case(phantom_case, bundle=tiny_bundle, cancel=cancel)
    assert len(checks) == 4


# ------------------------------------------------------------------------------------------- bad input
def _refused(capsys, args, out, fragment):
    code = main(args + ["--quiet", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and fragment in err, err
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}*"))


def test_altered_bundle_is_refused(phantom_files, tiny_bundle_dir, tmp_path, capsys):
    import shutil

    altered = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_dir, altered)
    config = altered / "config.json"
    config.write_text(config.read_text().replace('"eta": 0.8', '"eta": 0.7'))
    _refused(capsys, ["predict", str(phantom_files.image), str(phantom_files.segmentation), "--model", str(altered)],
             tmp_path / "out", "config.json: altered")


def test_preset_mismatch_is_refused(phantom_files, tiny_bundle_dir, tmp_path, capsys):
    _refused(capsys, ["predict", str(phantom_files.image), str(phantom_files.segmentation), "--model", str(tiny_bundle_dir),
                      "--preset", "mri-t2"], tmp_path / "out", "expects preset lidc-png, the image was declared mri-t2")


def test_dicom_modality_mismatch_is_refused(phantom_files, tiny_bundle_dir, tmp_path, capsys, write_dicom_series):
    folder = write_dicom_series(sitk.ReadImage(str(phantom_files.image)), tmp_path / "dicom", "MR")
    _refused(capsys, ["predict", str(folder), str(phantom_files.segmentation), "--model", str(tiny_bundle_dir)],
             tmp_path / "out", "expects CT images (preset lidc-png), the image is DICOM modality MR")


def test_nodes_smaller_than_a_voxel_in_plane_are_refused(phantom_files, tiny_bundle_dir, tmp_path, capsys):
    labels = sitk.ReadImage(str(phantom_files.labelmap))
    array = np.zeros(sitk.GetArrayViewFromImage(labels).shape, np.uint8)
    array[10, 60, 60] = 1
    array[12, 100, 90] = 2
    tiny = sitk.GetImageFromArray(array)
    tiny.CopyInformation(labels)
    sitk.WriteImage(tiny, str(tmp_path / "dots.nrrd"))
    _refused(capsys, ["predict", str(phantom_files.image), str(tmp_path / "dots.nrrd"), "--model", str(tiny_bundle_dir)],
             tmp_path / "out", "every node is smaller than one voxel in-plane")


@pytest.mark.parametrize("args, fragment", [
    (["--sex", "X"], "sex must be F or M"),
    (["--t-stage", "T7"], "--t-stage"),
    (["--age", "old"], "--age must be a number"),
])
def test_bad_clinical_values_are_refused(phantom_files, tiny_bundle_dir, tmp_path, capsys, args, fragment):
    _refused(capsys, ["predict", str(phantom_files.image), str(phantom_files.segmentation), "--model", str(tiny_bundle_dir),
                      *args], tmp_path / "out", fragment)


def test_input_errors_are_refused_the_same_way(phantom_files, tiny_bundle_dir, tmp_path, capsys):
    _refused(capsys, ["predict", str(tmp_path / "nope.nrrd"), str(phantom_files.segmentation), "--model",
                      str(tiny_bundle_dir)], tmp_path / "out", "nope.nrrd: file not found")


def test_a_node_too_small_for_the_model_is_skipped_and_said(phantom_files, tiny_bundle_dir, tmp_path, capsys):
    labels = sitk.ReadImage(str(phantom_files.labelmap))
    array = sitk.GetArrayFromImage(labels)
    array[12, 40, 40] = 9  # one voxel (0.64 mm2) is smaller than one patch pixel of the model
    dotted = sitk.GetImageFromArray(array)
    dotted.CopyInformation(labels)
    sitk.WriteImage(dotted, str(tmp_path / "labels.nrrd"))
    out = tmp_path / "out"
    assert main(["predict", str(phantom_files.image), str(tmp_path / "labels.nrrd"), "--model", str(tiny_bundle_dir),
                 "--preset", "lidc-png", "--quiet", "--out", str(out)]) == 0  # the declared preset is the bundle's
    report = json.loads((out / "report.json").read_text())
    assert len(report["nodes"]) == 7
    assert [s["segment_name"] for s in report["skipped_nodes"]] == ["Label_9"]
    assert "Label_9" in capsys.readouterr().err


def test_a_resampling_preset_maps_everything_back_to_the_input_grid(phantom_case, phantom_files, tiny_bundle_dir,
                                                                     tmp_path):
    """A bundle whose preset resamples (as mri-t2 does): the heatmap still lands on the input image's grid."""
    import shutil

    from LNMStagingLib.bundle import write_manifest

    variant = tmp_path / "resampling-bundle"
    shutil.copytree(tiny_bundle_dir, variant)
    config = json.loads((variant / "config.json").read_text())
    config["preset"].update(name="resampled-test", modality="MR", target_spacing_mm=[0.573, 0.573, 3.3])
    (variant / "config.json").write_text(json.dumps(config))
    (variant / "manifest.json").unlink()
    write_manifest(variant, config["name"], config["version"])
    result = predict_case(phantom_case, bundle_path=variant)
    assert result.input_info["measurement_grid"]["spacing_mm"] == pytest.approx([0.573, 0.573, 3.3])
    assert result.heatmap.shape == phantom_case.image.array.shape
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(phantom_files.labelmap)))
    for node in result.nodes:  # every node's own voxels carry heat on its primary slice
        k = int(np.argmax((labels == node.node_id).sum(axis=(1, 2))))
        assert result.heatmap[k][labels[k] == node.node_id].max() > 0, node.segment_name
    assert result.node(4).short_axis_mm == pytest.approx(10.0, abs=1.0)


# ------------------------------------------------------------------------------- where each patch lies
def _stored_flipped(path, axis: int, out):
    """The same physical image stored with its index axis ``axis`` (0 = i, 1 = j) reversed."""
    image = sitk.ReadImage(str(path))
    flipped = sitk.GetImageFromArray(np.flip(sitk.GetArrayFromImage(image), axis=2 - axis).copy())
    flipped.SetSpacing(image.GetSpacing())
    last = [0, 0, 0]
    last[axis] = image.GetSize()[axis] - 1
    flipped.SetOrigin(image.TransformContinuousIndexToPhysicalPoint(last))
    direction = np.array(image.GetDirection()).reshape(3, 3)
    direction[:, axis] *= -1
    flipped.SetDirection(direction.ravel().tolist())
    sitk.WriteImage(flipped, str(out), True)
    return out


def _patch_to_lps(path, node_patch) -> np.ndarray:
    from LNMStagingLib.io.volume import Volume

    return Volume.from_sitk(sitk.ReadImage(str(path))).index_to_lps() @ node_patch.patch_to_image


@pytest.mark.parametrize("axis", [0, 1], ids=["i to the right", "j to anterior"])
def test_node_patch_lies_in_the_same_place_whatever_the_storage_order(phantom_files, tiny_bundle, tmp_path, axis):
    """NodePatch.patch_to_image takes patch pixels to the input image's own indices: on an image stored
    mirrored, the patch lands on the same physical place, columns to the patient's left, rows to posterior."""
    from LNMStagingLib.imaging.case import load_case

    original = predict_case(load_case(phantom_files.image, phantom_files.labelmap), bundle=tiny_bundle)
    image = _stored_flipped(phantom_files.image, axis, tmp_path / "image.nrrd")
    labels = _stored_flipped(phantom_files.labelmap, axis, tmp_path / "labels.nrrd")
    mirrored = predict_case(load_case(image, labels), bundle=tiny_bundle)
    assert [n.probability for n in mirrored.nodes] == pytest.approx([n.probability for n in original.nodes], abs=1e-6)
    for node_id, patch in original.node_patches.items():
        placed = _patch_to_lps(phantom_files.image, patch)
        assert np.allclose(_patch_to_lps(image, mirrored.node_patches[node_id]), placed, atol=1e-6), node_id
        assert np.allclose(placed[:3, :2], [[patch.pixel_mm, 0], [0, patch.pixel_mm], [0, 0]], atol=1e-6), placed
        # the patch centre is the node's largest cross-section's centroid (on the phantom's LPS-aligned grid)
        size = patch.image.shape[-1]
        i, j, k = (patch.patch_to_image @ [(size - 1) / 2, (size - 1) / 2, 0, 1])[:3]
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(phantom_files.labelmap)))[int(round(k))] == node_id
        rows, cols = np.nonzero(mask)
        assert k == pytest.approx(round(k)) and (i, j) == pytest.approx((cols.mean(), rows.mean()), abs=1e-6)


def test_node_patch_mapping_follows_a_resized_model_input(phantom_case, tiny_bundle_dir, phantom_prediction, tmp_path):
    """A bundle sampling 64-pixel patches for its 32-pixel model (same field of view): the model's patch
    pixels are mapped with the resizing's pixel centres, so the patch lies exactly where the 32-pixel
    sampling puts it."""
    import shutil

    from LNMStagingLib.bundle import load_bundle, write_manifest
    from LNMStagingLib.imaging.case import prepare_case
    from LNMStagingLib.imaging.patches import extract_patches
    from LNMStagingLib.prediction.pipeline import bundle_settings

    variant = tmp_path / "resizing-bundle"
    shutil.copytree(tiny_bundle_dir, variant)
    config = json.loads((variant / "config.json").read_text())
    config["patch_sampling"]["size"] = 2 * config["vae"]["patch_size"]
    (variant / "config.json").write_text(json.dumps(config))
    (variant / "manifest.json").unlink()
    write_manifest(variant, config["name"], config["version"])
    result = predict_case(phantom_case, bundle_path=variant)
    preset, patch_config = bundle_settings(load_bundle(variant))
    patches = extract_patches(prepare_case(phantom_case, preset), patch_config)
    sampled, model = patch_config.size, config["vae"]["patch_size"]
    for node_id, patch in result.node_patches.items():
        assert patch.image.shape == (model, model)
        assert np.allclose(patch.patch_to_image, phantom_prediction.node_patches[node_id].patch_to_image, atol=1e-9)
        primary = patches.patches[patches.primary_index(node_id)]
        for model_pixel, sampled_pixel in (((model - 1) / 2, (sampled - 1) / 2), (-0.5, -0.5), (model - 0.5, sampled - 0.5)):
            assert np.allclose(patch.patch_to_image @ [model_pixel, model_pixel, 0, 1],
                               primary.patch_to_image @ [sampled_pixel, sampled_pixel, 0, 1], atol=1e-9)
        # a traversal frame of another size over the same field: the same placement rule
        assert np.allclose(patch.frame_to_image((sampled, sampled)), primary.patch_to_image, atol=1e-9)


# ------------------------------------------------------------------------------- what travels with a probability
def test_html_states_training_data_and_intended_use_even_when_the_card_lacks_them(phantom_prediction, monkeypatch):
    import dataclasses

    from LNMStagingLib.prediction import report_html

    html = report_html.render_html(phantom_prediction)
    assert "<b>training data</b>" in html and "<b>intended use</b>" in html
    assert phantom_prediction.model.intended_use in html and not phantom_prediction.model.intended_use.startswith("[")
    bare = dataclasses.replace(phantom_prediction, model=dataclasses.replace(phantom_prediction.model, card_summary={}))
    html = report_html.render_html(bare)
    assert html.count("not stated in the model card") == 2
    assert "not stated in the model card" in bare.model.context_line()
    monkeypatch.setattr(report_html, "UNCERTAIN_RANGE", (0.25, 0.75))
    calm = dataclasses.replace(bare, patient=dataclasses.replace(bare.patient, uncertain=False))
    assert "probability outside 0.25-0.75" in report_html.render_html(calm)


def test_headline_says_when_the_case_is_not_the_models_intended_input(phantom_prediction):
    from LNMStagingLib.prediction import report_html

    # the tiny bundle's card declares synthetic blobs, not lymph nodes: the headline says so beside P
    caveats = phantom_prediction.patient.input_caveats
    assert caveats and "not on lymph nodes" in caveats[0]
    html = report_html.render_html(phantom_prediction)
    headline = html[html.index('<div class="result">'):]
    headline = headline[:headline.index("</div>")]
    assert "Probability of lymph node metastasis" in headline and "not this model&#x27;s intended input" in headline
    model_section = html[html.index("<h2>Model</h2>"):]
    assert "<pre>" not in model_section and "<table>" in model_section  # the card as tables, not raw JSON
    assert phantom_prediction.to_report_dict()["patient"]["input_caveats"] == caveats


def test_heatmap_is_inside_the_node_and_faithful_by_deletion(phantom_prediction, tiny_bundle):
    """Removing a node's most-heated pixels lowers its logit more than removing as many random node pixels."""
    import torch

    from LNMStagingLib.prediction.gradcam import member_attributions

    assert tiny_bundle.config.masked_input
    for node in phantom_prediction.nodes:  # the model sees only the node: all the heat is inside it
        assert node.gradcam_in_node_fraction > 0.999, node.segment_name
    member = tiny_bundle.ensemble.members[0]
    rng = np.random.default_rng(0)
    lower_by_heat, lower_at_random = [], []
    for node in phantom_prediction.nodes:
        patch = phantom_prediction.node_patches[node.node_id]
        x = torch.as_tensor(patch.image, dtype=torch.float32)[None, None]
        features = tiny_bundle.ensemble.normalise_features(
            np.asarray([[getattr(node, name) for name in tiny_bundle.config.feature_names]], np.float32), 0)
        heat = member_attributions(member, x, features)[0, 0].numpy()
        inside = np.flatnonzero(patch.mask.ravel())
        count = max(1, len(inside) // 4)  # the "top 25 %" of the node's pixels
        hottest = inside[np.argsort(-heat.ravel()[inside])[:count]]
        random = rng.choice(inside, count, replace=False)

        def logit_without(pixels, x=x, features=features):
            kept = x.clone().reshape(-1)
            kept[pixels] = 0.0  # the model's background value
            with torch.no_grad():
                return float(member(kept.reshape(x.shape), features))

        with torch.no_grad():
            full = float(member(x, features))
        lower_by_heat.append(full - logit_without(hottest))
        lower_at_random.append(full - logit_without(random))
    assert np.mean(lower_by_heat) > np.mean(lower_at_random)
    assert sum(h > r for h, r in zip(lower_by_heat, lower_at_random, strict=True)) >= len(lower_by_heat) - 1


def test_classifier_traversal_goes_from_benign_to_malignant_looking(phantom_prediction, tiny_bundle):
    from LNMStagingLib.prediction.traversal import CLASSIFIER, TRAVERSAL_STEPS

    report = phantom_prediction.to_report_dict()
    for node in report["nodes"]:
        probabilities = node["traversal_probabilities"]
        assert set(probabilities) == {"growth", "border_irregularity", CLASSIFIER}
        assert all(len(v) == len(TRAVERSAL_STEPS) for v in probabilities.values())
        along = probabilities[CLASSIFIER]
        assert along[0] < along[len(along) // 2] < along[-1]  # the classifier's own direction raises P
    frames = phantom_prediction.traversals[phantom_prediction.nodes[0].node_id]
    assert frames[CLASSIFIER].shape == frames["growth"].shape
    directions = tiny_bundle.config.latent_directions
    growth, border = np.asarray(directions["growth"]), np.asarray(directions["border_irregularity"])
    assert abs(growth @ border) / (np.linalg.norm(growth) * np.linalg.norm(border)) < 1e-6  # distinct strips
    cosine = tiny_bundle.config.training["latent_direction_cosine"]["growth_vs_border_irregularity"]
    assert abs(cosine["stored"]) < 1e-6 and -1 <= cosine["raw"] <= 1
