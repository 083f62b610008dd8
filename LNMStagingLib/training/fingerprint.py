"""Fingerprints of what a resumable result depends on (data, configuration, code), so that a checkpoint or a
benchmark fold left by another run is never silently resumed."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__

# The code whose change makes a checkpoint or a fold result stale: how data become patches, models, training.
_CODE_PACKAGES = ("data", "imaging", "models", "training", "evaluation")


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``<version>+<digest of the library's data, imaging, model, training and evaluation sources>``."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for package in _CODE_PACKAGES:
        for file in sorted((root / package).rglob("*.py")):
            digest.update(file.relative_to(root).as_posix().encode())
            digest.update(file.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:12]}"


def array_digest(array: Any) -> str:
    """SHA-256 (16 hex digits) of an array's dtype, shape and bytes (numpy or torch)."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def fingerprint(**parts: Any) -> str:
    """One digest of JSON-able ``parts`` (arrays given as :func:`array_digest`) and the code version.

    Args:
        parts: what the result depends on, by name.

    Returns:
        24 hex digits.
    """
    text = json.dumps({"code": code_version(), **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]
