"""The CLI stays light: no torch, transformers or sentence-transformers unless a stage needs them."""

import subprocess
import sys

HEAVY = ("torch", "transformers", "sentence_transformers", "ranx", "numba")


def imported_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_help_imports_nothing_heavy() -> None:
    assert imported_after("import rerankcli.cli") == set()


def test_pipeline_machinery_imports_nothing_heavy() -> None:
    code = "import rerankcli.pipeline.config, rerankcli.pipeline.runner, rerankcli.evaluate.metrics, rerankcli.pipeline.registry"
    assert imported_after(code) == set()


def test_version_flag(rerank) -> None:
    result = rerank("--version")
    assert result.code == 0 and result.out.startswith("rerank ")
