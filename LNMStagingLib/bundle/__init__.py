"""Self-describing model bundles: the file format (:mod:`.format`), the parsed config (:mod:`.config`),
discovery of installed bundles (:mod:`.discovery`), loading (:mod:`.load`), the checks that make an untrusted
bundle safe to open (:mod:`.checks`) and the training input domain a case is compared with (:mod:`.domain`).

Loading verifies every file against the manifest, parses JSON strictly, and loads weights with safetensors
only (never pickle); the members run as an :class:`~LNMStagingLib.models.ensemble.Ensemble`.
"""

import importlib
from typing import Any

from . import discovery, format
from .discovery import (
    ENV_DEFAULT_MODEL,
    ENV_MODEL_PATH,
    BundleInfo,
    builtin_models_dir,
    default_bundle_path,
    list_bundles,
    resolve_bundle,
)
from .format import (
    BUNDLE_FORMAT,
    BUNDLE_FORMAT_VERSION,
    CARD_JSON,
    CARD_MD,
    CONFIG,
    MANIFEST,
    TRAINING_PATIENTS_KEY,
    patient_fingerprints,
    rehash_manifest,
    save_member_weights,
    sha256_file,
    strict_json,
    training_set_sha256,
    verify_bundle,
    write_bundle,
    write_manifest,
)

# config and loading need torch (the models' configurations live beside their modules): imported on first use,
# so that discovery (``lnmstaging models``, the Slicer module's model list) stays light
_LAZY = {"BundleConfig": "config", "MemberSpec": "config", "ModelBundle": "load", "load_bundle": "load",
         "config": None, "load": None, "checks": None, "domain": None}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_LAZY[name] or name}")
    return module if _LAZY[name] is None else getattr(module, name)

__all__ = [
    "checks", "config", "discovery", "domain", "format", "load",
    "BUNDLE_FORMAT", "BUNDLE_FORMAT_VERSION", "CARD_JSON", "CARD_MD", "CONFIG", "ENV_DEFAULT_MODEL",
    "ENV_MODEL_PATH", "MANIFEST", "TRAINING_PATIENTS_KEY", "BundleConfig", "BundleInfo", "MemberSpec",
    "ModelBundle", "builtin_models_dir", "default_bundle_path", "list_bundles", "load_bundle",
    "patient_fingerprints", "rehash_manifest", "resolve_bundle", "save_member_weights", "sha256_file",
    "strict_json", "training_set_sha256", "verify_bundle", "write_bundle", "write_manifest",
]
