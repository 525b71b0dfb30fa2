"""Every pipeline shipped in pipelines/ validates (models resolve, files exist, stages wire)."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT, SHARED, bundled_pipeline


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "pipelines").glob("*.yaml")))
def test_a_bundled_pipeline_validates(rerank, tmp_path, name):
    if name != "demo" and not SHARED.exists():
        pytest.skip("needs ../shared/data")
    path = bundled_pipeline(name, tmp_path) if name != "demo" else ROOT / "pipelines" / "demo.yaml"
    result = rerank("validate", path)
    if name.startswith("bright-") and not (SHARED / "bright").exists():  # BRIGHT is not in ../shared/data
        assert result.code != 0 and "dataset.bright: folder not found" in result.err
        assert len(result.err.strip().splitlines()) == 1
        return
    assert result.code == 0, result.err
    assert "valid" in result.out + result.err
