"""Self-describing model bundles: the file format (:mod:`.format`), the parsed config (:mod:`.config`),
discovery of installed bundles (:mod:`.discovery`) and loading (:mod:`.load`).

Loading verifies every file against the manifest, parses JSON strictly, and loads weights with safetensors
only (never pickle); the members run as an :class:`~LNMStagingLib.models.ensemble.Ensemble`.
"""

from .config import BundleConfig, MemberSpec
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
    save_member_weights,
    sha256_file,
    strict_json,
    verify_bundle,
    write_bundle,
    write_manifest,
)
from .load import ModelBundle, load_bundle

__all__ = [
    "BUNDLE_FORMAT", "BUNDLE_FORMAT_VERSION", "CARD_JSON", "CARD_MD", "CONFIG", "ENV_DEFAULT_MODEL",
    "ENV_MODEL_PATH", "MANIFEST", "TRAINING_PATIENTS_KEY", "BundleConfig", "BundleInfo", "MemberSpec",
    "ModelBundle", "builtin_models_dir", "default_bundle_path", "list_bundles", "load_bundle",
    "patient_fingerprints", "resolve_bundle", "save_member_weights", "sha256_file", "strict_json",
    "verify_bundle", "write_bundle", "write_manifest",
]
