"""``rerank doctor``: which retrieval and model backends work on this machine, and if not, why.

Each check does the real thing where that is cheap enough (start the JVM and load Anserini's
searcher, import sentence-transformers), because "installed" and "usable" differ: pyserini
installs fine beside Java 17 and only fails when the JVM starts.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

from rerankcli.core.checks import Check
from rerankcli.core.errors import UserError
from rerankcli.core.versions import versions


def _importable(backend: str, module: str, distribution: str, extra: str) -> Check:
    version = versions(distribution)[distribution]
    if importlib.util.find_spec(module) is None or version == "absent":
        hint = f" (pip install 'rerankcli[{extra}]')" if extra else ""
        return Check(backend, False, f"{distribution} is not installed{hint}")
    return Check(backend, True, f"{distribution} {version}")


def check_bm25s() -> Check:
    return _importable("bm25s", "bm25s", "bm25s", "")


def check_rank_bm25() -> Check:
    return _importable("rank_bm25", "rank_bm25", "rank-bm25", "")


def java_lines() -> list[str]:
    """Every Java runtime considered for Lucene, in the order it is tried."""
    from rerankcli.retrieve.java import candidates

    return [f"java: {runtime.describe()}" for runtime in candidates()] or ["java: none found"]


def check_pyserini() -> Check:
    """pyserini installed, a Java 21+ found, the JVM started, Anserini's searcher class loaded."""
    found = _importable("pyserini", "pyserini", "pyserini", "lucene")
    if not found.ok:
        return found
    from rerankcli.retrieve import lucene
    from rerankcli.retrieve.java import find_java

    notes = java_lines()
    try:
        runtime = find_java()
        java_version = lucene.start()
        from jnius import autoclass

        autoclass("io.anserini.search.SimpleSearcher")  # loads Anserini and Lucene classes
    except UserError as exc:
        return Check("pyserini", False, str(exc), notes)
    except Exception as exc:  # pyjnius reports a broken jar or JVM as plain exceptions
        return Check("pyserini", False, f"Anserini did not load ({type(exc).__name__}: {exc})", notes)
    jar = lucene.anserini_jar().name.removesuffix("-fatjar.jar")
    return Check("pyserini", True, f"{found.detail}, {jar}, Java {java_version} "
                                   f"({runtime.source}: {runtime.home})", notes)


def check_dense() -> Check:
    found = _importable("dense", "sentence_transformers", "sentence-transformers", "dense")
    if not found.ok:
        return found
    try:
        import torch
    except Exception as exc:  # a broken torch install raises all sorts of errors
        return Check("dense", False, f"torch does not import ({type(exc).__name__}: {exc})")
    device = f"CUDA: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "CPU only"
    return Check("dense", True, f"{found.detail}, torch {torch.__version__}, {device}")


def check_irds() -> Check:
    return _importable("irds", "ir_datasets", "ir_datasets", "irds")


#: retrieval and data backends; the LLM backends describe themselves (``Backend.check``)
RETRIEVAL_CHECKS: dict[str, Callable[[], Check]] = {
    "bm25s": check_bm25s,
    "rank_bm25": check_rank_bm25,
    "pyserini": check_pyserini,
    "dense": check_dense,
    "irds": check_irds,
}


def checks() -> dict[str, Callable[[], Check]]:
    """Every check ``rerank doctor`` runs: retrieval backends, then each registered LLM backend."""
    from rerankcli.llm.registry import BACKENDS
    from rerankcli.pipeline.registry import load_plugins

    load_plugins()  # a plugin's backends check themselves too
    return {**RETRIEVAL_CHECKS, **{name: backend.check for name, backend in BACKENDS.items()}}
