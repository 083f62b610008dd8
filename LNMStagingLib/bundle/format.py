"""The bundle's file format: its layout, the manifest (SHA-256 and size of every file), verification, strict
JSON, and writing a bundle.

A bundle is a folder::

    <name>/
      manifest.json        format, name, version and the SHA-256 + size of every other file
      config.json          BundleConfig (architecture, preprocessing preset, patch sampling, feature
                           min/max, clinical inputs, eta, threshold, latent directions, gradcam_layer)
      model_card.json      data, metrics with intervals, intended use, limits
      MODEL_CARD.md        the same for people
      members/member_<k>.safetensors   one file per ensemble member (VAE + MIL weights)

Verification refuses missing, truncated, altered or unlisted files with
:class:`~LNMStagingLib.errors.BundleError` naming the file; weights are safetensors only (never pickle).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BundleError

if TYPE_CHECKING:
    from .config import BundleConfig

MANIFEST = "manifest.json"
CONFIG = "config.json"
CARD_JSON = "model_card.json"
CARD_MD = "MODEL_CARD.md"
BUNDLE_FORMAT = "lnmstaging-model-bundle"
BUNDLE_FORMAT_VERSION = 1


TRAINING_PATIENTS_KEY = "training_patient_sha256_16"


def patient_fingerprints(patient_ids) -> list[str]:
    """Truncated SHA-256 of each training patient id: enough to tell whether an evaluation set overlaps the
    training data, without shipping the ids themselves."""
    return sorted(hashlib.sha256(str(pid).encode("utf-8")).hexdigest()[:16] for pid in patient_ids)


def training_set_sha256(patient_ids) -> str:
    """SHA-256 of a member's training set: its distinct patient ids as text, sorted, one per line. Two members
    trained on the same patients have the same hash, whatever their features (the proof of
    :func:`~LNMStagingLib.evaluation.encoder_reuse.check_fold_encoders`)."""
    text = "\n".join(sorted({str(pid) for pid in patient_ids}))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(bundle_dir: Path, name: str, version: str, extra: dict | None = None) -> Path:
    """(Re)write ``manifest.json`` listing the SHA-256 and size of every other file in the bundle."""
    bundle_dir = Path(bundle_dir)
    files = {}
    for path in sorted(p for p in bundle_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(bundle_dir).as_posix()
        if rel == MANIFEST:
            continue
        files[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    manifest = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        "name": name,
        "version": version,
        "files": files,
        **(extra or {}),
    }
    target = bundle_dir / MANIFEST
    target.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return target


def rehash_manifest(bundle_dir: Path, manifest: dict) -> Path:
    """Rewrite ``manifest.json`` of a bundle whose files changed, keeping the name, version and extra keys of its
    earlier ``manifest`` (the parsed one the bundle was loaded with).

    Args:
        bundle_dir: the bundle folder.
        manifest: its previous manifest.

    Returns:
        The path of the new manifest.
    """
    header = {k: v for k, v in manifest.items() if k not in ("format", "format_version", "name", "version", "files")}
    return write_manifest(Path(bundle_dir), manifest["name"], manifest["version"], header)


def strict_json(path: Path) -> Any:
    """The JSON value in ``path``; duplicate keys, NaN/Infinity and malformed text are a :class:`BundleError`."""
    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            raise BundleError(path, "duplicate keys in JSON")
        return dict(pairs)

    def no_constants(value):
        raise BundleError(path, f"invalid JSON constant {value}")

    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constants)
    except BundleError:
        raise
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise BundleError(path, f"not valid JSON ({error})") from None


def verify_bundle(bundle_dir: str | Path) -> dict:
    """Check every file of a bundle against its manifest; returns the manifest. Raises :class:`BundleError`."""
    bundle_dir = Path(bundle_dir)
    manifest_path = bundle_dir / MANIFEST
    if not bundle_dir.is_dir():
        raise BundleError(bundle_dir, "model bundle folder not found")
    from .checks import refuse_links

    refuse_links(bundle_dir)  # before reading anything: a link may lead to /dev/zero, a loop, or outside
    if not manifest_path.is_file():
        raise BundleError(manifest_path, "missing: not a model bundle (no manifest.json)")
    manifest = strict_json(manifest_path)
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(manifest_path, f"not a {BUNDLE_FORMAT} manifest")
    if manifest.get("format_version") != BUNDLE_FORMAT_VERSION:
        raise BundleError(manifest_path, f"unsupported bundle format version {manifest.get('format_version')!r}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(manifest_path, "manifest lists no files")
    for rel, entry in files.items():
        path = bundle_dir / rel
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise BundleError(manifest_path, f"bad manifest entry for {rel}")
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise BundleError(manifest_path, f"manifest entry {rel} points outside the bundle")
        if not path.is_file():
            raise BundleError(path, "missing from the model bundle")
        size = path.stat().st_size
        if "size" in entry and size != entry["size"]:
            raise BundleError(path, f"truncated or altered: {size} bytes, manifest says {entry['size']}")
        if sha256_file(path) != entry["sha256"]:
            raise BundleError(path, "altered: SHA-256 does not match the bundle manifest")
    for path in bundle_dir.rglob("*"):
        if path.is_file():
            rel = path.relative_to(bundle_dir).as_posix()
            if rel != MANIFEST and rel not in files:
                raise BundleError(path, "file not listed in the bundle manifest (remove it or rebuild the bundle)")
    for required in (CONFIG, CARD_JSON):
        if required not in files:
            raise BundleError(bundle_dir / required, "missing from the model bundle")
    return manifest



def save_member_weights(member, path: Path, dtype: str = "float16") -> None:
    """Write one member's state dict with safetensors (floating tensors cast to ``dtype``)."""
    import torch
    from safetensors.torch import save_file

    target = getattr(torch, dtype)
    state = {
        k: (v.detach().to(target) if v.is_floating_point() else v.detach()).contiguous().cpu()
        for k, v in member.state_dict().items()
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"format": "lnmstaging-member", "dtype": dtype})
    os.chmod(path, 0o644)


def write_bundle(out_dir: Path, config: BundleConfig, members: list, card: dict, card_markdown: str,
                 domain: dict | None = None) -> Path:
    """Write a complete bundle (weights, config, card, input domain, manifest) into ``out_dir`` (created; must
    be empty). ``domain``: the training input domain (:mod:`LNMStagingLib.bundle.domain`), written as
    ``domain.json`` when given."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise BundleError(out_dir, "bundle folder is not empty")
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(members) != len(config.members):
        raise ValueError("members and config.members differ in number")
    for spec, member in zip(config.members, members, strict=True):
        save_member_weights(member, out_dir / spec.file, config.weights_dtype)
    (out_dir / CONFIG).write_text(json.dumps(config.to_json(), indent=2) + "\n", encoding="utf-8")
    (out_dir / CARD_JSON).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (out_dir / CARD_MD).write_text(card_markdown, encoding="utf-8")
    if domain is not None:
        from .domain import DOMAIN_FILE

        (out_dir / DOMAIN_FILE).write_text(json.dumps(domain, indent=2) + "\n", encoding="utf-8")
    write_manifest(out_dir, config.name, config.version)
    return out_dir
