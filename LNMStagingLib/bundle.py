"""Self-describing model bundles: discovery, integrity checks, loading, and inference helpers.

A bundle is a folder::

    <name>/
      manifest.json        format, name, version and the SHA-256 + size of every other file
      config.json          BundleConfig (architecture, preprocessing preset, patch sampling, feature
                           min/max, clinical inputs, eta, threshold, latent directions, gradcam_layer)
      model_card.json      data, metrics with intervals, intended use, limits
      MODEL_CARD.md        the same for people
      members/member_<k>.safetensors   one file per ensemble member (VAE + MIL weights)

Loading verifies every file against the manifest (missing, truncated, altered or unlisted files are refused
with :class:`~LNMStagingLib.errors.BundleError` naming the file), parses JSON strictly, and loads weights with
safetensors only (never pickle).

Discovery: ``Resources/Models/`` next to the package, plus the folders in the environment variable
``LNMSTAGING_MODEL_PATH`` (``os.pathsep``-separated; each entry is a bundle or a folder of bundles).
The default bundle: ``LNMSTAGING_DEFAULT_MODEL`` (a bundle name or path) when set, else the name written in
``Resources/Models/DEFAULT``, else the first bundle found.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BundleError

MANIFEST = "manifest.json"
CONFIG = "config.json"
CARD_JSON = "model_card.json"
CARD_MD = "MODEL_CARD.md"
BUNDLE_FORMAT = "lnmstaging-model-bundle"
BUNDLE_FORMAT_VERSION = 1
ENV_MODEL_PATH = "LNMSTAGING_MODEL_PATH"
ENV_DEFAULT_MODEL = "LNMSTAGING_DEFAULT_MODEL"


def builtin_models_dir() -> Path:
    """``Resources/Models`` of this source tree / installation."""
    import LNMStagingLib

    return Path(LNMStagingLib.__file__).resolve().parents[1] / "Resources" / "Models"


# ------------------------------------------------------------------------------------------ discovery
@dataclass(frozen=True)
class BundleInfo:
    name: str
    path: Path
    default: bool = False

    def to_json(self) -> dict:
        return {"name": self.name, "path": str(self.path), "default": self.default}


def _search_roots() -> list[Path]:
    roots = [Path(p).expanduser() for p in os.environ.get(ENV_MODEL_PATH, "").split(os.pathsep) if p.strip()]
    roots.append(builtin_models_dir())
    return roots


def _bundle_name(path: Path) -> str:
    try:
        data = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        name = data.get("name")
        if isinstance(name, str) and name:
            return name
    except (OSError, ValueError, AttributeError):
        pass
    return path.name


def list_bundles() -> list[BundleInfo]:
    """Installed bundles (folders holding ``manifest.json``), exactly one marked ``default`` when any.

    Cheap: reads only the manifests' names; integrity is checked by :func:`load_bundle`.
    """
    found: list[tuple[str, Path]] = []
    seen: set[Path] = set()
    for root in _search_roots():
        if not root.is_dir():
            continue
        candidates = [root] if (root / MANIFEST).is_file() else sorted(p for p in root.iterdir() if p.is_dir())
        for candidate in candidates:
            resolved = candidate.resolve()
            if resolved in seen or not (candidate / MANIFEST).is_file():
                continue
            seen.add(resolved)
            found.append((_bundle_name(candidate), resolved))
    default_path = _choose_default(found)
    return [BundleInfo(name, path, path == default_path) for name, path in found]


def _choose_default(found: list[tuple[str, Path]]) -> Path | None:
    if not found:
        return None
    wanted = os.environ.get(ENV_DEFAULT_MODEL, "").strip()
    if not wanted:
        marker = builtin_models_dir() / "DEFAULT"
        if marker.is_file():
            wanted = marker.read_text(encoding="utf-8").strip()
    if wanted:
        as_path = Path(wanted).expanduser()
        for name, path in found:
            if name == wanted or path.name == wanted or (as_path.is_dir() and path == as_path.resolve()):
                return path
    return found[0][1]


def default_bundle_path() -> Path:
    """Path of the default bundle; :class:`BundleError` when no bundle is installed."""
    wanted = os.environ.get(ENV_DEFAULT_MODEL, "").strip()
    if wanted and (Path(wanted).expanduser() / MANIFEST).is_file():
        return Path(wanted).expanduser().resolve()
    for info in list_bundles():
        if info.default:
            return info.path
    raise BundleError(
        builtin_models_dir(), f"no model bundle installed (set {ENV_MODEL_PATH} or pass --model)"
    )


def resolve_bundle(path_or_name: str | Path | None) -> Path:
    """A bundle folder from a path, an installed bundle's name, or None (the default bundle)."""
    if path_or_name is None or str(path_or_name) == "":
        return default_bundle_path()
    candidate = Path(path_or_name).expanduser()
    if candidate.is_dir():
        return candidate.resolve()
    for info in list_bundles():
        if info.name == str(path_or_name):
            return info.path
    raise BundleError(path_or_name, "no such model bundle (neither a folder nor an installed bundle's name)")


# ------------------------------------------------------------------------------------------ integrity
TRAINING_PATIENTS_KEY = "training_patient_sha256_16"


def patient_fingerprints(patient_ids) -> list[str]:
    """Truncated SHA-256 of each training patient id: enough to tell whether an evaluation set overlaps the
    training data, without shipping the ids themselves."""
    return sorted(hashlib.sha256(str(pid).encode("utf-8")).hexdigest()[:16] for pid in patient_ids)


def sha256_file(path: Path) -> str:
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


def _strict_json(path: Path) -> Any:
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
    if not manifest_path.is_file():
        raise BundleError(manifest_path, "missing: not a model bundle (no manifest.json)")
    manifest = _strict_json(manifest_path)
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


# ------------------------------------------------------------------------------------------ config
@dataclass
class MemberSpec:
    file: str
    role: str = "fold"  # "final" (trained on all data) or "fold" (cross-validation fold model)
    fold: int | None = None
    feature_min: list[float] | None = None  # this member's own normalisation (None: the bundle's)
    feature_max: list[float] | None = None
    mil: dict | None = None  # this member's MILConfig (None: the bundle's ``mil``); e.g. its own eta
    threshold: float | None = None  # this member's own inner-validation threshold (informative)


@dataclass
class BundleConfig:
    """The parsed ``config.json`` of a bundle (every key required, unknown keys refused)."""

    name: str
    version: str
    preset: dict  # the foundation Preset as JSON (e.g. "lidc-png")
    patch_size: int
    fov_mm: float | None
    patch_sampling: dict  # the foundation PatchConfig as JSON (size, fov_mm, max_patches, ...)
    masked_input: bool  # patches are lesion-only (outside the node mask = 0)
    feature_names: list[str]
    feature_min: list[float]
    feature_max: list[float]
    clinical_inputs: list[dict]  # ClinicalSpec dicts; [] = no clinical data (e.g. LIDC)
    eta: float
    threshold: float
    threshold_source: str
    latent_directions: dict[str, list[float]]  # {"growth": [...], "border_irregularity": [...]}
    gradcam_layer: str  # dotted module name inside a member (ModelMember), e.g. "vae.encoder.blocks.5"
    vae: dict  # VAEConfig JSON
    mil: dict  # MILConfig JSON
    members: list[MemberSpec]
    weights_dtype: str = "float16"
    node_threshold: float = 0.5  # for node-level decisions (inner validation), informative
    training: dict = field(default_factory=dict)  # provenance (seeds, epochs, data), informative only

    @classmethod
    def from_json(cls, data: Any, source: Path) -> BundleConfig:
        if not isinstance(data, dict):
            raise BundleError(source, "config must be a JSON object")
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.name not in ("weights_dtype", "training", "node_threshold")}
        unknown = set(data) - names
        missing = required - set(data)
        if unknown:
            raise BundleError(source, f"unknown config keys {sorted(unknown)}")
        if missing:
            raise BundleError(source, f"config keys missing: {sorted(missing)}")
        values = dict(data)
        try:
            values["members"] = [MemberSpec(**m) for m in data["members"]]
            config = cls(**values)
            config._check(source)
        except (TypeError, ValueError) as error:
            raise BundleError(source, f"invalid config ({error})") from None
        return config

    def _check(self, source: Path) -> None:
        n = len(self.feature_names)
        if len(self.feature_min) != n or len(self.feature_max) != n:
            raise BundleError(source, "feature_names, feature_min and feature_max differ in length")
        if not 0.0 <= float(self.threshold) <= 1.0 or not 0.0 <= float(self.eta) <= 1.0:
            raise BundleError(source, "threshold and eta must be in [0, 1]")
        if not self.members:
            raise BundleError(source, "config lists no ensemble members")
        if self.weights_dtype not in ("float16", "float32"):
            raise BundleError(source, f"unsupported weights_dtype {self.weights_dtype!r}")
        for key in ("growth", "border_irregularity"):
            if key not in self.latent_directions:
                raise BundleError(source, f"latent_directions lacks {key!r}")

    def to_json(self) -> dict:
        data = asdict(self)
        return data


# ------------------------------------------------------------------------------------------ bundle
@dataclass
class LatentCodes:
    """``mu`` (N, D): the primary member's latent means (member 0, trained on all data);
    ``per_member`` (K, N, D). Members' latent spaces are trained separately and are NOT aligned, so
    a mean over members would be meaningless: use ``mu`` for traversals and the latent directions."""

    mu: Any
    per_member: Any


@dataclass
class PatientPrediction:
    probability: float  # ensemble mean of the final probability
    std: float  # ensemble standard deviation (uncertainty)
    per_member: list[float]
    positive: bool  # probability >= threshold
    threshold: float
    node_probabilities: dict  # node id -> ensemble mean probability (mean over its patches)


class ModelBundle:
    """A verified, loaded bundle. Methods take float tensors (or arrays) and run without gradients."""

    def __init__(self, path: Path, manifest: dict, manifest_sha256: str, config: BundleConfig,
                 card: dict, card_markdown: str, members: list, device: str = "cpu") -> None:
        self.path = path
        self.manifest = manifest
        self.manifest_sha256 = manifest_sha256
        self.config = config
        self.name = config.name
        self.version = config.version
        self.card = card
        self.card_markdown = card_markdown
        self.members = members  # list[ModelMember], eval mode
        self.device = device
        from .models.mil import FeatureScaler

        self.scaler = FeatureScaler(
            tuple(config.feature_names), tuple(config.feature_min), tuple(config.feature_max)
        )
        self.member_scalers = [
            FeatureScaler(tuple(config.feature_names), tuple(spec.feature_min), tuple(spec.feature_max))
            if spec.feature_min is not None and spec.feature_max is not None else self.scaler
            for spec in config.members
        ]

    def __repr__(self) -> str:
        return f"ModelBundle(name={self.name!r}, version={self.version!r}, members={len(self.members)})"

    @property
    def n_members(self) -> int:
        return len(self.members)

    @property
    def threshold(self) -> float:
        return float(self.config.threshold)

    def to(self, device: str) -> ModelBundle:
        for member in self.members:
            member.to(device)
        self.device = device
        return self

    # -- inputs
    def _tensor(self, values) -> Any:
        import torch

        return torch.as_tensor(np.asarray(values) if not isinstance(values, torch.Tensor) else values,
                               dtype=torch.float32).to(self.device)

    def prepare_patches(self, images, masks=None):
        """(N, H, W) or (N, 1, H, W) images in [0, 1] (+ optional masks) -> (N, 1, S, S) model input:
        lesion-only when the bundle says so, area-resized to the bundle's patch size when needed."""
        import torch
        import torch.nn.functional as F

        x = self._tensor(images)
        if x.ndim == 3:
            x = x[:, None]
        if masks is not None and self.config.masked_input:
            m = self._tensor(masks)
            x = x * (m[:, None] if m.ndim == 3 else m)
        size = self.config.patch_size
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="area")
        return torch.clamp(x, 0.0, 1.0)

    def normalise_features(self, features, member: int | None = None):
        """Raw (N, F) features in ``config.feature_names`` order -> [0, 1] with the stored min/max
        (the bundle's, or one member's own when ``member`` is given)."""
        f = self._tensor(features)
        if f.ndim != 2 or f.shape[1] != len(self.config.feature_names):
            raise BundleError(self.path, f"features must be (N, {len(self.config.feature_names)}): "
                              f"{', '.join(self.config.feature_names)}")
        scaler = self.scaler if member is None else self.member_scalers[member]
        return scaler.transform(f)

    def _check_patches(self, patches):
        x = self._tensor(patches)
        if x.ndim == 3:
            x = x[:, None]
        s = self.config.patch_size
        if x.ndim != 4 or x.shape[1] != 1 or x.shape[2] != s or x.shape[3] != s:
            raise BundleError(self.path, f"patches must be (N, 1, {s}, {s}), got {tuple(x.shape)}")
        return x

    # -- inference
    def encode(self, patches) -> LatentCodes:
        """Latent means of (N, 1, S, S) patches: :class:`LatentCodes` (primary ``mu`` and ``per_member``)."""
        import torch

        x = self._check_patches(patches)
        with torch.no_grad():
            per = torch.stack([m.vae.encode(x)[0] for m in self.members])
        return LatentCodes(mu=per[0], per_member=per)

    def decode(self, z, member: int = 0):
        """Decode latent codes (N, D) of ``member`` (default the primary) to (N, 1, S, S) images."""
        import torch

        with torch.no_grad():
            return self.members[member].vae.decode(self._tensor(z))

    def node_probabilities(self, patches, features):
        """Per-patch malignancy probability of every member: (K, N).

        ``patches`` (N, 1, S, S) from :meth:`prepare_patches`; ``features`` (N, F) raw (mm) features of
        each patch's cross-section. A node's probability is the mean over its patches (see
        :func:`aggregate_by_node`).
        """
        import torch

        x = self._check_patches(patches)
        self.normalise_features(features)  # shape check
        if x.shape[0] != np.asarray(features).shape[0]:
            raise BundleError(self.path, "patches and features differ in number")
        if x.shape[0] == 0:
            return torch.zeros((self.n_members, 0))
        with torch.no_grad():
            return torch.stack([torch.sigmoid(m(x, self.normalise_features(features, k))[:, 0])
                                for k, m in enumerate(self.members)])

    def _bag_tensors(self, bag):
        import torch

        x = self._tensor(bag.patches)
        if x.ndim == 3:
            x = x[:, None]
        m = x.shape[0]
        if m != self.config.mil.get("max_patches", m):
            raise BundleError(self.path, f"bags must hold {self.config.mil.get('max_patches')} patches (padded)")
        f = self._tensor(bag.features)
        self.normalise_features(f)  # shape check
        valid = torch.as_tensor(np.asarray(bag.valid, dtype=bool), device=self.device)
        node_index = torch.as_tensor(np.where(np.asarray(bag.node_index) < 0, 0, bag.node_index),
                                     dtype=torch.long, device=self.device)
        return x, f, valid, node_index

    def patient_outputs(self, bag) -> dict:
        """All MIL outputs per member for one :class:`~LNMStagingLib.data.bags.Bag`: tensors with a leading
        member axis: ``final`` (K,), ``patient_mlp`` (K,), ``node_max`` (K,), ``patch_prob`` (K, M)."""
        import torch

        from .models.mil import clinical_vector

        x, raw, valid, node_index = self._bag_tensors(bag)
        outputs: dict[str, list] = {}
        with torch.no_grad():
            for k, member in enumerate(self.members):
                f = self.normalise_features(raw, k)
                clinical = None
                if member.mil.config.n_clinical_inputs:
                    clinical = self._tensor(clinical_vector(member.mil.config.clinical, bag.clinical))[None]
                latent = None
                if member.mil.config.use_latent:
                    latent = torch.zeros((x.shape[0], member.vae.config.latent_dim), device=self.device)
                    if valid.any():
                        latent[valid] = member.vae.encode(x[valid])[0]
                out = member.mil(latent[None] if latent is not None else None, f[None], valid[None],
                                 node_index[None], clinical)
                for key, value in out.items():
                    outputs.setdefault(key, []).append(value[0])
        return {key: torch.stack(values) for key, values in outputs.items()}

    def patient_probabilities(self, bag):
        """Final patient probability of every member (K,): eta * patient MLP + (1 - eta) * max node prob."""
        return self.patient_outputs(bag)["final"]

    def predict_patient(self, bag) -> PatientPrediction:
        """Ensemble prediction for one bag, with uncertainty and per-node probabilities."""
        out = self.patient_outputs(bag)
        final = out["final"].cpu().numpy().astype(float)
        mean = float(final.mean())
        patch_mean = out["patch_prob"].mean(0).cpu().numpy()
        nodes = {}
        valid = np.asarray(bag.valid, dtype=bool)
        for index in sorted(set(np.asarray(bag.node_index)[valid].tolist())):
            node_id = bag.node_ids[index] if index < len(bag.node_ids) else index
            nodes[node_id] = float(patch_mean[valid & (np.asarray(bag.node_index) == index)].mean())
        return PatientPrediction(mean, float(final.std()), final.tolist(), mean >= self.threshold,
                                 self.threshold, nodes)

    # -- foundation glue
    def patch_features(self, prepared, patch_set) -> np.ndarray:
        """Raw features (P, F) of every patch of a foundation ``PatchSet`` (``config.feature_names`` order):
        ``measure_cross_section`` of the patch's node on the patch's slice of the prepared case."""
        from .patches import patch_features

        return patch_features(prepared, patch_set.patches, tuple(self.config.feature_names))

    def bag_from_patch_set(self, patch_set, features, clinical: dict | None = None):
        """The patient's :class:`~LNMStagingLib.data.bags.Bag` from a foundation ``PatchSet`` (its ``bag``
        patches, in order) and the raw features of all its patches (from :meth:`patch_features`).
        ``clinical``: e.g. ``{"age": 67, "sex": 1, "t_stage": 3}`` (missing keys = missing)."""
        from .data.bags import Bag

        images, masks, valid = patch_set.stacked()
        x = self.prepare_patches(images, masks).cpu().numpy()[:, 0]
        chosen = [patch_set.patches[i] for i in patch_set.bag]
        feats = np.zeros((len(valid), len(self.config.feature_names)), dtype=np.float32)
        node_index = np.full(len(valid), -1, dtype=np.int64)
        node_ids: list = []
        features = np.asarray(features, dtype=np.float32)
        for slot, (i, patch) in enumerate(zip(patch_set.bag, chosen, strict=True)):
            feats[slot] = features[i]
            if patch.node_id not in node_ids:
                node_ids.append(patch.node_id)
            node_index[slot] = node_ids.index(patch.node_id)
        return Bag(x, feats, valid.astype(bool), node_index, clinical, None, "", node_ids)

    def patients_seen_in_training(self, patient_ids) -> int | None:
        """How many of ``patient_ids`` trained this bundle (None: the bundle does not record it)."""
        recorded = self.config.training.get(TRAINING_PATIENTS_KEY)
        if not isinstance(recorded, list):
            return None
        known = set(recorded)
        return sum(fingerprint in known for fingerprint in patient_fingerprints(patient_ids))

    def member_module(self, member: int = 0):
        """The ``torch.nn.Module`` of one member (``forward(patches, normalised_features) -> (N, 1)``
        logits); its Grad-CAM layer is ``config.gradcam_layer``. With MONAI::

            cam = GradCAM(nn_module=bundle.member_module(0), target_layers=bundle.config.gradcam_layer)
            heatmaps = cam(patches, class_idx=0, features=bundle.normalise_features(raw_features, 0))
        """
        return self.members[member]


def aggregate_by_node(probabilities, node_ids) -> dict:
    """Mean probability per node id from per-patch probabilities (N,) (or (K, N): mean over K first)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim == 2:
        p = p.mean(0)
    out: dict = {}
    for node in dict.fromkeys(node_ids):
        out[node] = float(p[[i for i, n in enumerate(node_ids) if n == node]].mean())
    return out


def load_bundle(path: str | Path | None = None, device: str = "cpu") -> ModelBundle:
    """Verify (SHA-256 of every file) and load a bundle folder, an installed bundle's name, or the default.

    Raises :class:`~LNMStagingLib.errors.BundleError` naming the offending file when anything is missing,
    truncated, altered, unlisted, or malformed.
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .models.member import ModelMember
    from .models.mil import MILConfig
    from .models.vae import VAEConfig

    bundle_dir = resolve_bundle(path)
    manifest = verify_bundle(bundle_dir)
    manifest_sha = sha256_file(bundle_dir / MANIFEST)
    config = BundleConfig.from_json(_strict_json(bundle_dir / CONFIG), bundle_dir / CONFIG)
    card = _strict_json(bundle_dir / CARD_JSON)
    if not isinstance(card, dict):
        raise BundleError(bundle_dir / CARD_JSON, "model card must be a JSON object")
    card_md_path = bundle_dir / CARD_MD
    card_markdown = card_md_path.read_text(encoding="utf-8") if card_md_path.is_file() else ""
    try:
        vae_config = VAEConfig.from_dict(config.vae)
        mil_config = MILConfig.from_dict(config.mil)
    except (TypeError, ValueError) as error:
        raise BundleError(bundle_dir / CONFIG, f"invalid model architecture ({error})") from None
    if list(mil_config.feature_names) != list(config.feature_names):
        raise BundleError(bundle_dir / CONFIG, "mil.feature_names differ from feature_names")
    if vae_config.patch_size != config.patch_size:
        raise BundleError(bundle_dir / CONFIG, "vae.patch_size differs from patch_size")
    members = []
    for spec in config.members:
        if spec.mil is not None:
            try:
                member_mil = MILConfig.from_dict(spec.mil)
            except (TypeError, ValueError) as error:
                raise BundleError(bundle_dir / CONFIG, f"invalid member MIL config ({error})") from None
        else:
            member_mil = mil_config
        file = bundle_dir / spec.file
        if spec.file not in manifest["files"]:
            raise BundleError(file, "member weights not listed in the manifest")
        try:
            state = load_file(str(file))
        except (SafetensorError, OSError, ValueError) as error:
            raise BundleError(file, f"unreadable weights ({error})") from None
        member = ModelMember(vae_config, member_mil)
        state = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()}
        try:
            member.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise BundleError(file, f"weights do not fit the configured architecture ({str(error)[:200]})") from None
        member.eval().to(device)
        members.append(member)
    return ModelBundle(bundle_dir, manifest, manifest_sha, config, card, card_markdown, members, device)


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


def write_bundle(out_dir: Path, config: BundleConfig, members: list, card: dict, card_markdown: str) -> Path:
    """Write a complete bundle (weights, config, card, manifest) into ``out_dir`` (created; must be empty)."""
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
    write_manifest(out_dir, config.name, config.version)
    return out_dir
