"""Shared fixtures: paths to ../shared/data (tests skip when absent) and a CLI runner.

CLI tests run ``rerank`` as a subprocess: exit codes, stderr and the absence of tracebacks
are what users see, so that is what the tests check.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DEMO = ROOT / "rerankcli" / "demo"


def shared(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test when the data is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not found: {path} (tests on real collections need ../shared/data)")
    return path


def bundled_pipeline(name: str, folder: Path) -> Path:
    """``pipelines/<name>.yaml`` copied into ``folder``: absolute data paths, output ``out``."""
    text = (ROOT / "pipelines" / f"{name}.yaml").read_text()
    text = text.replace("../../shared/data", str(SHARED))
    text = re.sub(r"(?m)^output: .*$", "output: out", text)
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def rerank(cache_dir: Path):
    """Run the ``rerank`` CLI in a subprocess with an isolated cache folder."""

    def call(*args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> Result:
        environment = {**os.environ, "RERANK_CACHE_DIR": str(cache_dir), **(env or {})}
        proc = subprocess.run(
            [sys.executable, "-m", "rerankcli", *map(str, args)],
            capture_output=True, text=True, env=environment, cwd=cwd, timeout=1800,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return call


def assert_user_error(result: Result, *fragments: str) -> None:
    """Exit 2, no traceback, and one error line (the last) that contains every fragment.

    Progress lines of stages that ran before the error may precede it.
    """
    assert result.code == 2, (result.code, result.err)
    assert "Traceback" not in result.err, result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.err
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


def snapshot(*folders: Path) -> dict[str, bytes]:
    """Every file below ``folders`` with its content, to prove that nothing was written."""
    found = {}
    for folder in folders:
        if folder.exists():
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    found[str(path)] = path.read_bytes()
    return found
