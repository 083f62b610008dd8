"""Shared fixtures: the phantom case written once per session, and the LIDC data location."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]


def lidc_directory() -> Path:
    return Path(os.environ.get("LNMSTAGING_LIDC_DIR", REPOSITORY.parent / "shared" / "data" / "lidc-nodules"))


@pytest.fixture(scope="session")
def phantom_files(tmp_path_factory):
    from LNMStagingLib.phantom import write_phantom

    return write_phantom(tmp_path_factory.mktemp("phantom"))


@pytest.fixture(scope="session")
def lidc_dir() -> Path:
    path = lidc_directory()
    if not (path / "nodules.npz").is_file():
        pytest.skip(f"LIDC data not found at {path} (set LNMSTAGING_LIDC_DIR); the real-data tests need it")
    return path
