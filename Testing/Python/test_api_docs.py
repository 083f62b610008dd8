"""The API page is generated from the code: pdoc renders every module of LNMStagingLib."""

from __future__ import annotations

import pkgutil
from pathlib import Path

import pytest

import LNMStagingLib


def test_pdoc_renders_every_module(tmp_path: Path):
    pdoc = pytest.importorskip("pdoc", reason="pdoc is in the test extra (scripts/setup.sh installs it)")
    pdoc.render.configure(docformat="google")
    pdoc.pdoc("LNMStagingLib", output_directory=tmp_path)
    modules = ["LNMStagingLib"] + [m.name for m in pkgutil.walk_packages(LNMStagingLib.__path__, "LNMStagingLib.")
                                   if not m.name.endswith("__main__")]
    missing = [name for name in modules if not (tmp_path / (name.replace(".", "/") + ".html")).is_file()]
    assert not missing, f"pdoc rendered no page for {missing}"
    page = (tmp_path / "LNMStagingLib" / "models" / "ensemble.html").read_text(encoding="utf-8")
    assert "patch_probabilities" in page and "node_means" in page
