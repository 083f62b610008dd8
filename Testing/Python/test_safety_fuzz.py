"""Issue 11, property-based tests of the readers (image, segmentation, manifest, bundle) on mutated real files:
each gives a correct result or an InputError/BundleError with a one-line message, never another exception,
and touches no file (bounded examples, seeded by hypothesis' database-free derandomised runs)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis (the test extra) is needed for the fuzz tests")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from LNMStagingLib.errors import BundleError, InputError  # noqa: E402

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
# A mutation: (kind, where as a fraction of the file, a byte value)
MUTATIONS = st.lists(st.tuples(st.sampled_from(["flip", "truncate", "insert", "delete"]),
                               st.floats(0.0, 1.0), st.integers(0, 255)), min_size=1, max_size=4)


def _mutate(data: bytes, mutations) -> bytes:
    out = bytearray(data)
    for kind, where, value in mutations:
        at = min(int(where * len(out)), max(len(out) - 1, 0))
        if kind == "flip" and out:
            out[at] = value
        elif kind == "truncate":
            del out[at:]
        elif kind == "insert":
            out[at:at] = bytes([value]) * (1 + value % 7)
        elif kind == "delete" and out:
            del out[at:at + 1 + value % 13]
    return bytes(out)


def _small_case(folder: Path) -> tuple[Path, Path, Path]:
    """A 24 x 24 x 8 image, its labelmap (two nodes) and a .seg.nrrd of the same."""
    from LNMStagingLib.synthetic.phantom import labelmap_to_seg_nrrd

    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.integers(0, 200, (8, 24, 24)).astype(np.int16))
    labels = np.zeros((8, 24, 24), np.uint8)
    labels[2:5, 5:9, 5:10] = 1
    labels[3:6, 14:19, 13:18] = 2
    labelmap = sitk.GetImageFromArray(labels)
    image_path, label_path, seg_path = folder / "image.nrrd", folder / "labels.nrrd", folder / "seg.seg.nrrd"
    sitk.WriteImage(image, str(image_path))  # uncompressed: mutations reach the header and the raw voxels
    sitk.WriteImage(labelmap, str(label_path))
    labelmap_to_seg_nrrd(labelmap, ["Node A", "Node B"], seg_path)
    return image_path, label_path, seg_path


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


def _one_line(error: Exception) -> None:
    assert isinstance(error, InputError | BundleError), f"{type(error).__name__}: {error}"
    assert "\n" not in str(error) and str(error).strip(), repr(str(error))


@pytest.fixture(scope="module")
def case_files(tmp_path_factory):
    return _small_case(tmp_path_factory.mktemp("fuzz"))


@FUZZ
@given(mutations=MUTATIONS)
def test_image_reader(case_files, mutations):
    from LNMStagingLib.io.image import read_image

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "image.nrrd"
        path.write_bytes(_mutate(case_files[0].read_bytes(), mutations))
        before = _snapshot(Path(folder))
        try:
            image = read_image(path)
            assert image.GetDimension() == 3
        except Exception as error:  # noqa: BLE001 - the property: only the two error kinds, one line
            _one_line(error)
        assert _snapshot(Path(folder)) == before


@FUZZ
@given(mutations=MUTATIONS, which=st.sampled_from([1, 2]))
def test_segmentation_reader(case_files, mutations, which):
    from LNMStagingLib.io.segmentation import read_segmentation

    reference = sitk.ReadImage(str(case_files[0]))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / case_files[which].name
        path.write_bytes(_mutate(case_files[which].read_bytes(), mutations))
        before = _snapshot(Path(folder))
        try:
            result = read_segmentation(path, reference)
            assert result.nodes and all(node.mask.any() for node in result.nodes)
            assert [node.node_id for node in result.nodes] == list(range(1, len(result.nodes) + 1))
        except Exception as error:  # noqa: BLE001
            _one_line(error)
        assert _snapshot(Path(folder)) == before


@FUZZ
@given(text=st.text(max_size=300), raw=st.binary(max_size=120), as_bytes=st.booleans())
def test_manifest_reader(text, raw, as_bytes):
    from LNMStagingLib.io.cohort import read_manifest

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cohort.csv"
        header = "patient_id,image,segmentation,age,sex,t_stage,n_stage\n"
        if as_bytes:
            path.write_bytes(header.encode() + raw)
        else:
            path.write_text(header + text, encoding="utf-8")
        before = _snapshot(Path(folder))
        try:
            entries = read_manifest(path)
            assert entries and len({e.patient_id for e in entries}) == len(entries)
        except Exception as error:  # noqa: BLE001
            _one_line(error)
        assert _snapshot(Path(folder)) == before


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False)
                           | st.text(max_size=8), lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


def _leaf_paths(value, prefix=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaf_paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaf_paths(item, (*prefix, index))
    yield prefix


@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_bundle_reader(tiny_bundle_dir, data):
    from LNMStagingLib.bundle import load_bundle
    from LNMStagingLib.bundle.format import write_manifest

    with tempfile.TemporaryDirectory() as folder:
        bundle = Path(folder) / "bundle"
        shutil.copytree(tiny_bundle_dir, bundle)
        target = data.draw(st.sampled_from(["config.json", "model_card.json", "members/member_0.safetensors",
                                            "manifest.json"]))
        if target.endswith(".json") and data.draw(st.booleans()):
            # a consistent, re-hashed bundle whose JSON holds an arbitrary value somewhere
            content = json.loads((bundle / target).read_text())
            paths = [p for p in _leaf_paths(content) if p]
            where = data.draw(st.sampled_from(paths))
            node = content
            for key in where[:-1]:
                node = node[key]
            node[where[-1]] = data.draw(JSON_VALUES)
            (bundle / target).write_text(json.dumps(content))
            if target != "manifest.json":
                manifest = json.loads((bundle / "manifest.json").read_text())
                write_manifest(bundle, manifest["name"], manifest["version"])
        else:
            file = bundle / target
            file.write_bytes(_mutate(file.read_bytes(), data.draw(MUTATIONS)))
            if target != "manifest.json" and data.draw(st.booleans()):
                manifest = json.loads((bundle / "manifest.json").read_text())
                write_manifest(bundle, manifest["name"], manifest["version"])
        before = _snapshot(Path(folder))
        try:
            loaded = load_bundle(bundle)
            assert loaded.n_members >= 1
        except Exception as error:  # noqa: BLE001
            _one_line(error)
        assert _snapshot(Path(folder)) == before
    assert os.path.isdir(tiny_bundle_dir)
