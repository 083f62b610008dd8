"""Issue 11, untrusted bundles: an unambiguous default, shadowing and unknown names are errors, links inside a
bundle are refused, and config sizes are checked against limits and the weights' header before any module is
built."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from LNMStagingLib.bundle import list_bundles, load_bundle
from LNMStagingLib.bundle.discovery import (
    ENV_DEFAULT_MODEL,
    ENV_MODEL_PATH,
    builtin_models_dir,
    default_bundle_path,
)
from LNMStagingLib.bundle.format import CONFIG, MANIFEST, write_manifest
from LNMStagingLib.cli.main import main
from LNMStagingLib.errors import BundleError

SHIPPED = builtin_models_dir() / "lidc-vae-mlp"


def _copy(tiny_bundle_dir, target):
    shutil.copytree(tiny_bundle_dir, target)
    return target


def _edit_config(bundle, edit):
    config = json.loads((bundle / CONFIG).read_text())
    edit(config)
    (bundle / CONFIG).write_text(json.dumps(config))
    manifest = json.loads((bundle / MANIFEST).read_text())
    write_manifest(bundle, manifest["name"], manifest["version"])  # a consistent, re-hashed (hostile) bundle


@pytest.mark.skipif(not (SHIPPED / MANIFEST).is_file(), reason="the shipped bundle is not in this checkout")
def test_the_shipped_bundle_stays_default_beside_other_bundles(tiny_bundle_dir, tmp_path, monkeypatch):
    _copy(tiny_bundle_dir, tmp_path / "models" / "tiny")
    monkeypatch.setenv(ENV_MODEL_PATH, str(tmp_path / "models"))
    monkeypatch.delenv(ENV_DEFAULT_MODEL, raising=False)
    assert default_bundle_path() == SHIPPED.resolve()


@pytest.mark.skipif(not (SHIPPED / MANIFEST).is_file(), reason="the shipped bundle is not in this checkout")
def test_a_bundle_named_like_the_default_is_an_error(tiny_bundle_dir, tmp_path, monkeypatch, capsys):
    impostor = _copy(tiny_bundle_dir, tmp_path / "models" / "lidc-vae-mlp")
    manifest = json.loads((impostor / MANIFEST).read_text())
    manifest["name"] = "lidc-vae-mlp"
    (impostor / MANIFEST).write_text(json.dumps(manifest))
    monkeypatch.setenv(ENV_MODEL_PATH, str(tmp_path / "models"))
    monkeypatch.delenv(ENV_DEFAULT_MODEL, raising=False)
    with pytest.raises(BundleError, match="would shadow"):
        list_bundles()
    assert main(["models"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "lidc-vae-mlp" in err


def test_a_mistyped_default_name_is_an_error(tiny_bundle_dir, tmp_path, monkeypatch):
    _copy(tiny_bundle_dir, tmp_path / "models" / "tiny")
    monkeypatch.setenv(ENV_MODEL_PATH, str(tmp_path / "models"))
    monkeypatch.setenv(ENV_DEFAULT_MODEL, "tiny-synthtic")
    with pytest.raises(BundleError, match="names no installed model bundle"):
        default_bundle_path()
    monkeypatch.setenv(ENV_DEFAULT_MODEL, "tiny-synthetic")
    assert default_bundle_path() == (tmp_path / "models" / "tiny").resolve()


@pytest.mark.parametrize("kind", ["outside file", "device", "folder", "loop"])
def test_links_inside_a_bundle_are_refused(tiny_bundle_dir, tmp_path, kind):
    bundle = _copy(tiny_bundle_dir, tmp_path / "bundle")
    if kind == "outside file":
        outside = tmp_path / "card.json"
        shutil.move(bundle / "model_card.json", outside)
        os.symlink(outside, bundle / "model_card.json")
    elif kind == "device":
        os.symlink("/dev/zero", bundle / "members" / "extra.safetensors")
    elif kind == "folder":
        shutil.move(bundle / "members", tmp_path / "members")
        os.symlink(tmp_path / "members", bundle / "members")
    else:
        os.symlink(bundle, bundle / "members" / "loop")
    started = time.perf_counter()
    with pytest.raises(BundleError, match="symbolic link"):
        load_bundle(bundle)
    assert time.perf_counter() - started < 10


@pytest.mark.parametrize("key, value", [("latent_size", 200000), ("base", 100000), ("patch_size", 100000)])
def test_huge_architecture_sizes_are_refused_before_building(tiny_bundle_dir, tmp_path, key, value):
    bundle = _copy(tiny_bundle_dir, tmp_path / "bundle")
    _edit_config(bundle, lambda config: config["vae"].__setitem__(key, value))
    started = time.perf_counter()
    with pytest.raises(BundleError, match="outside the sane range"):
        load_bundle(bundle)
    assert time.perf_counter() - started < 10


def test_a_huge_hidden_layer_is_refused(tiny_bundle_dir, tmp_path):
    bundle = _copy(tiny_bundle_dir, tmp_path / "bundle")
    _edit_config(bundle, lambda config: config["mil"].__setitem__("patch_hidden", 10**9))
    with pytest.raises(BundleError, match="patch_hidden"):
        load_bundle(bundle)


def test_sizes_that_disagree_with_the_weights_header_are_refused(tiny_bundle_dir, tmp_path):
    bundle = _copy(tiny_bundle_dir, tmp_path / "bundle")
    _edit_config(bundle, lambda config: config["mil"].__setitem__("patch_hidden", 64))
    with pytest.raises(BundleError, match="in the file") as refused:
        load_bundle(bundle)
    assert "member_0.safetensors" in str(refused.value) and "\n" not in str(refused.value)


def test_a_safetensors_file_with_a_lying_header_is_refused(tiny_bundle_dir, tmp_path):
    bundle = _copy(tiny_bundle_dir, tmp_path / "bundle")
    weights = bundle / "members" / "member_0.safetensors"
    weights.write_bytes((10**12).to_bytes(8, "little") + weights.read_bytes()[8:])
    manifest = json.loads((bundle / MANIFEST).read_text())
    write_manifest(bundle, manifest["name"], manifest["version"])
    with pytest.raises(BundleError, match="not a safetensors file"):
        load_bundle(bundle)
