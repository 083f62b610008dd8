"""Model bundles: the tiny bundle is complete and loads; integrity checks refuse altered bundles; discovery."""

from __future__ import annotations

import io
import json
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch

from LNMStagingLib.bundle import (
    ENV_DEFAULT_MODEL,
    ENV_MODEL_PATH,
    default_bundle_path,
    list_bundles,
    load_bundle,
    verify_bundle,
    write_manifest,
)
from LNMStagingLib.data.bags import Bag
from LNMStagingLib.errors import BundleError
from LNMStagingLib.training.tiny import build_tiny_bundle


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("bundles") / "tiny", seed=0)


@pytest.fixture
def copy_of(tiny, tmp_path):
    def make() -> Path:
        target = tmp_path / "copy"
        shutil.copytree(tiny, target)
        return target

    return make


def test_tiny_bundle_loads_and_predicts(tiny):
    bundle = load_bundle(tiny)
    assert bundle.name == "tiny-synthetic" and bundle.n_members == 2
    assert len(bundle.manifest_sha256) == 64
    cfg = bundle.config
    assert cfg.patch_size == 32 and cfg.preset["name"] == "lidc-png" and cfg.fov_mm > 0
    assert cfg.clinical_inputs == [] and 0.5 <= cfg.eta <= 0.8 and 0 <= cfg.threshold <= 1
    assert set(cfg.latent_directions) >= {"growth", "border_irregularity"}
    assert len(cfg.latent_directions["growth"]) == bundle.ensemble.members[0].vae.config.latent_dim
    assert "research" in json.dumps(bundle.card).lower() or bundle.card_markdown

    rng = np.random.default_rng(0)
    images = rng.random((5, 64, 64)).astype(np.float32)
    masks = np.zeros((5, 64, 64), bool)
    masks[:, 20:44, 20:44] = True
    patches = bundle.prepare_patches(images, masks)
    assert patches.shape == (5, 1, 32, 32) and float(patches.max()) <= 1.0
    codes = bundle.ensemble.encode(patches)
    assert codes.mu.shape == (5, 16) and codes.per_member.shape == (2, 5, 16)
    assert bundle.ensemble.decode(codes.mu).shape == (5, 1, 32, 32)
    features = np.tile([6.0, 8.0, 0.75, 0.95, 1.1], (5, 1))
    probs = bundle.ensemble.patch_probabilities(patches, features)
    assert probs.shape == (2, 5) and torch.all((probs >= 0) & (probs <= 1))

    bag = Bag.from_patches(patches[:, 0].numpy(), features, ["a", "a", "b", "c", "c"], areas=[5, 4, 3, 2, 1],
                           max_patches=15)
    out = bundle.ensemble.outputs_of_bag(bag)
    final = out["final"]
    assert final.shape == (2,)
    eta = bundle.ensemble.members[0].mil.config.eta
    expected = eta * out["patient_mlp"][0] + (1 - eta) * out["node_max"][0]
    assert torch.allclose(final[0], expected, atol=1e-6)
    prediction = bundle.ensemble.predict_bag(bag)
    assert set(prediction.node_probabilities) == {"a", "b", "c"}
    assert prediction.positive == (prediction.probability >= bundle.threshold)


def test_gradcam_layer_is_the_last_spatial_encoder_block(tiny):
    bundle = load_bundle(tiny)
    member = bundle.ensemble.members[0]
    layer = dict(member.named_modules())[bundle.config.gradcam_layer]
    captured = {}

    def hook(_module, _inputs, output):
        captured["shape"] = tuple(output.shape)

    handle = layer.register_forward_hook(hook)
    member(torch.rand(2, 1, 32, 32), torch.rand(2, 5))
    handle.remove()
    assert captured["shape"][0] == 2 and captured["shape"][2:] == (8, 8)


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "delete", "extra_file"])
def test_damaged_bundle_is_refused_naming_the_file(copy_of, damage):
    bundle_dir = copy_of()
    weights = bundle_dir / "members" / "member_1.safetensors"
    if damage == "flip_byte":
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
        name = "member_1.safetensors"
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-100])
        name = "member_1.safetensors"
    elif damage == "delete":
        (bundle_dir / "config.json").unlink()
        name = "config.json"
    else:
        (bundle_dir / "members" / "extra.safetensors").write_bytes(b"x")
        name = "extra.safetensors"
    with pytest.raises(BundleError, match=name.replace(".", r"\.")):
        load_bundle(bundle_dir)


def test_config_is_parsed_strictly(copy_of):
    bundle_dir = copy_of()
    config = json.loads((bundle_dir / "config.json").read_text())
    config["surprise"] = 1
    (bundle_dir / "config.json").write_text(json.dumps(config))
    write_manifest(bundle_dir, "tiny-synthetic", "0.0.1")  # hashes fine, content not
    verify_bundle(bundle_dir)
    with pytest.raises(BundleError, match="unknown config keys"):
        load_bundle(bundle_dir)


def test_weights_that_do_not_fit_are_refused(copy_of):
    bundle_dir = copy_of()
    config = json.loads((bundle_dir / "config.json").read_text())
    config["vae"]["base"] = 5
    (bundle_dir / "config.json").write_text(json.dumps(config))
    write_manifest(bundle_dir, "tiny-synthetic", "0.0.1")
    with pytest.raises(BundleError, match="member_0"):
        load_bundle(bundle_dir)


def test_config_is_checked_against_the_shipped_schema(copy_of):
    from LNMStagingLib.bundle.config import SCHEMA_FILE

    assert SCHEMA_FILE.is_file() and json.loads(SCHEMA_FILE.read_text())["additionalProperties"] is False
    bundle_dir = copy_of()
    config = json.loads((bundle_dir / "config.json").read_text())
    config["latent_directions"]["growth"][0] = "large"  # only the schema knows these must be numbers
    (bundle_dir / "config.json").write_text(json.dumps(config))
    write_manifest(bundle_dir, "tiny-synthetic", "0.0.1")
    with pytest.raises(BundleError, match="config schema at latent_directions/growth/0"):
        load_bundle(bundle_dir)


def test_config_stores_each_fact_once_and_reads_earlier_repeats(copy_of):
    bundle_dir = copy_of()
    config = json.loads((bundle_dir / "config.json").read_text())
    assert not {"patch_size", "fov_mm", "feature_names", "clinical_inputs", "eta", "masked_input"} & set(config)
    earlier = dict(config, patch_size=config["vae"]["patch_size"], eta=config["mil"]["eta"])
    (bundle_dir / "config.json").write_text(json.dumps(earlier))
    write_manifest(bundle_dir, "tiny-synthetic", "0.0.1")
    assert load_bundle(bundle_dir).config.patch_size == config["vae"]["patch_size"]
    (bundle_dir / "config.json").write_text(json.dumps(dict(earlier, patch_size=64)))
    write_manifest(bundle_dir, "tiny-synthetic", "0.0.1")
    with pytest.raises(BundleError, match="patch_size differs"):
        load_bundle(bundle_dir)


def test_discovery_and_models_json(tiny, monkeypatch):
    from LNMStagingLib.cli.main import main

    monkeypatch.setenv(ENV_MODEL_PATH, str(tiny.parent))
    monkeypatch.setenv(ENV_DEFAULT_MODEL, "tiny-synthetic")
    found = [b for b in list_bundles() if b.path == tiny.resolve()]
    assert len(found) == 1 and found[0].name == "tiny-synthetic" and found[0].default
    assert sum(b.default for b in list_bundles()) == 1
    assert default_bundle_path() == tiny.resolve()
    assert load_bundle("tiny-synthetic").path == tiny.resolve()  # by name
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        assert main(["models", "--json"]) == 0
    listed = json.loads(buffer.getvalue())
    assert isinstance(listed, list) and all(set(item) == {"name", "path", "default"} for item in listed)
    assert any(item["name"] == "tiny-synthetic" and item["default"] for item in listed)


def test_unknown_bundle_name_is_a_bundle_error():
    with pytest.raises(BundleError):
        load_bundle("no-such-bundle-anywhere")


def test_bundle_on_a_phantom_case(tiny, tmp_path):
    """Phantom case -> prepared with the bundle's preset -> patches -> features -> bag -> prediction."""
    from LNMStagingLib.imaging.case import load_case, prepare_case
    from LNMStagingLib.imaging.patches import extract_patches, patch_features
    from LNMStagingLib.imaging.presets import Preset
    from LNMStagingLib.synthetic.phantom import write_phantom

    bundle = load_bundle(tiny)
    files = write_phantom(tmp_path / "phantom")
    prepared = prepare_case(load_case(files.image, files.segmentation), Preset.from_dict(bundle.config.preset))
    patch_set = extract_patches(prepared, bundle.config.patch_sampling)
    features = patch_features(prepared, patch_set.patches, tuple(bundle.config.feature_names))
    assert features.shape == (len(patch_set.patches), 5) and np.all(features[:, 0] <= features[:, 1] + 1e-6)
    images, masks, _ = patch_set.stacked(bag_only=False)
    bag = Bag.from_patches(bundle.prepare_patches(images, masks)[:, 0].numpy(), features,
                           [p.node_id for p in patch_set.patches], areas=[p.area_mm2 for p in patch_set.patches],
                           max_patches=patch_set.config.max_patches, clinical=None)
    assert bag.patches.shape == (15, 32, 32) and bag.valid.sum() == len(patch_set.bag)
    prediction = bundle.ensemble.predict_bag(bag)
    assert 0 <= prediction.probability <= 1 and len(prediction.per_member) == 2
    assert set(prediction.node_probabilities) == {patch_set.patches[i].node_id for i in patch_set.bag}


def test_shipped_bundles_are_intact_and_small():
    from LNMStagingLib.bundle import builtin_models_dir

    shipped = [p for p in builtin_models_dir().iterdir() if (p / "manifest.json").is_file()] \
        if builtin_models_dir().is_dir() else []
    if not shipped:
        pytest.skip("no bundle shipped in Resources/Models")
    for path in shipped:
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        assert size < 30e6, f"{path.name} is {size / 1e6:.1f} MB"
        bundle = load_bundle(path)
        assert bundle.card and bundle.card_markdown and "research use only" in bundle.card_markdown.lower()
        assert bundle.config.preset["name"] and bundle.config.fov_mm and bundle.config.patch_size == 32
    marker = builtin_models_dir() / "DEFAULT"
    if marker.is_file():
        assert marker.read_text().strip() in {p.name for p in shipped}


def test_training_is_deterministic(tiny, tiny_bundle_dir, tmp_path):
    """The same seed and data give the same weights (here against the session's bundle, possibly built by an
    earlier test run in another process); another seed gives other weights."""
    from safetensors.torch import load_file

    def weights(bundle_dir: Path, member: int = 0) -> dict:
        return load_file(str(bundle_dir / "members" / f"member_{member}.safetensors"))

    for member in (0, 1):
        ours, theirs = weights(tiny, member), weights(tiny_bundle_dir, member)
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), f"member {member} differs between two builds"
    other = build_tiny_bundle(tmp_path / "seed1", seed=1, n_members=1)
    assert not all(torch.equal(a, b) for a, b in zip(weights(tiny).values(), weights(other).values(), strict=True))


def test_members_output_the_mean_of_their_calibrated_heads(tiny):
    from safetensors import safe_open

    from LNMStagingLib.evaluation.evaluate import calibration_summary

    bundle = load_bundle(tiny)
    for k, spec in enumerate(bundle.config.members):
        assert spec.n_heads == 2 and len(bundle.ensemble.members[k].heads) == 2
        assert all(not c.is_identity for c in bundle.ensemble.head_calibrations[k])
        with safe_open(str(tiny / spec.file), "pt") as handle:
            assert any(key.startswith("heads.1.") for key in handle.keys())
    rng = np.random.default_rng(0)
    n_features, m = len(bundle.config.feature_names), int(bundle.config.mil.max_patches)
    index = np.full(m, -1)
    index[:4] = [0, 0, 1, 1]  # two nodes of two patches, the rest padding
    bag = Bag(patches=rng.random((m, 1, 32, 32)).astype(np.float32), features=rng.random((m, n_features)) * 10,
              valid=index >= 0, node_index=index, node_ids=["a", "b"], clinical=None)
    out = bundle.ensemble.outputs_of_bag(bag)
    for k in range(bundle.n_members):
        member = bundle.ensemble.members[k]
        feats = bundle.ensemble.normalise_features(bag.features, k)[None]
        latent = member.latent(torch.as_tensor(bag.patches))[None]
        valid, nodes = torch.as_tensor(index >= 0)[None], torch.as_tensor(np.where(index < 0, 0, index))[None]
        heads = [(h(latent, feats, valid, nodes, None)["final"][0], c)
                 for h, c in zip(member.heads, bundle.ensemble.head_calibrations[k], strict=True)]
        expected = torch.stack([c.apply(f) for f, c in heads]).mean()
        assert torch.isclose(out["calibrated"][k], expected, atol=1e-5)
    summary = calibration_summary(bundle)
    assert "held-out inner fold" in summary["method"] and len(summary["members"][0]["heads"]) == 2


def test_a_member_file_without_its_configured_heads_is_refused(copy_of):
    bundle_dir = copy_of()
    config = json.loads((bundle_dir / "config.json").read_text())
    member = config["members"][0]
    member["head_calibrations"] = member["head_calibrations"] + member["head_calibrations"][:1]  # 3 heads, 2 stored
    (bundle_dir / "config.json").write_text(json.dumps(config))
    write_manifest(bundle_dir, "tiny-synthetic", "0.0.1")
    with pytest.raises(BundleError, match="member_0.*missing \\['heads.2"):
        load_bundle(bundle_dir)
