"""``rerank plan`` predicts the model calls that the run then makes, for every LLM method.

A random-weight tiny Llama (fast) reranks three DL19 queries' top-6 with each method and
strategy. The plan's calls must equal the manifest's ``llm.calls``; for PRP's sorts, whose
prompts depend on the answers, the count must lie in the plan's range. Where the plan says its
prompt tokens are exact, they must equal the manifest's too.
"""

from __future__ import annotations

import json

from tests.conftest import pipeline

METHODS = {
    "yes-no": {"method": "yes-no"},
    "graded": {"method": "graded"},
    "query-likelihood": {"method": "query-likelihood"},
    "listwise-sliding": {"method": "listwise", "strategy": "sliding", "window": 4, "stride": 2, "max_new_tokens": 8},
    "listwise-full": {"method": "listwise", "strategy": "full", "max_new_tokens": 8},
    "listwise-first": {"method": "listwise", "strategy": "first", "window": 4, "stride": 2},
    "pairwise-allpair": {"method": "pairwise", "strategy": "allpair"},
    "pairwise-heapsort": {"method": "pairwise", "strategy": "heapsort", "top_k": 3},
    "pairwise-sliding": {"method": "pairwise", "strategy": "sliding", "top_k": 3},
    "icr": {"method": "icr"},
    "listwise-tdpart": {"method": "listwise", "strategy": "tdpart", "window": 3, "top_k": 2, "budget": 2,
                        "max_new_tokens": 8},
    "listwise-psc": {"method": "listwise", "strategy": "sliding", "window": 4, "stride": 2, "permutations": 2,
                     "max_new_tokens": 8},
    "insertrank": {"method": "listwise", "strategy": "first", "window": 4, "stride": 2, "first_stage_scores": True},
    "setwise-heapsort": {"method": "setwise", "top_k": 3},
    "setwise-bubblesort": {"method": "setwise", "strategy": "bubblesort", "top_k": 3},
    "tourrank": {"method": "tourrank", "group_size": 3, "max_new_tokens": 8},
    "groupwise": {"method": "groupwise", "group_size": 4, "repeats": 2, "max_new_tokens": 8},
}


def test_plan_calls_equal_the_manifest_counts_for_every_method(rerank, mini_dl19, tiny_llama, tmp_path) -> None:
    stages = [{"name": name, "type": "rerank", "model": str(tiny_llama), "depth": 6, "max_passage_tokens": 24,
               "backend": {"type": "hf", "dtype": "float32"}, **config} for name, config in METHODS.items()]
    path = pipeline(tmp_path, mini_dl19, stages)
    planned = rerank("plan", path, "-f", "json")
    assert planned.code == 0, planned.err
    plans = {p["stage"]: p for p in json.loads(planned.out)}
    assert not any((tmp_path / "out").glob("*.trec"))  # planning ran nothing
    ran = rerank("run", path, "-q")
    assert ran.code == 0, ran.err
    for name in METHODS:
        plan = plans[name]
        llm = json.loads((tmp_path / "out" / f"{name}.manifest.json").read_text())["details"]["llm"]
        assert plan["queries"] == 3 and plan["candidates"] == 18, name
        if plan["calls"] is not None:
            assert llm["calls"] == plan["calls"], name
        else:
            low, high = plan["calls_range"]
            assert low <= llm["calls"] <= high, (name, llm["calls"], plan["calls_range"])
        if plan["tokens_exact"]:
            assert llm["prompt_tokens"] == plan["prompt_tokens"], name
    exact = {name for name, plan in plans.items() if plan["tokens_exact"]}
    assert {"yes-no", "graded", "query-likelihood", "listwise-full", "pairwise-allpair", "icr"} <= exact
    assert plans["pairwise-sliding"]["calls"] is None  # which pairs meet again depends on the answers


def test_plan_shows_the_table_before_anything_is_computed(rerank, mini_dl19, tiny_llama, tmp_path) -> None:
    stages = [{"name": "yes-no", "type": "rerank", "method": "yes-no", "model": str(tiny_llama), "depth": 6}]
    result = rerank("plan", pipeline(tmp_path, mini_dl19, stages))
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].split()[:4] == ["stage", "type", "method", "cached"]
    row = next(line for line in lines if line.startswith("yes-no")).split()
    assert row[3:7] == ["no", "3", "18", "18"]
    assert not (tmp_path / "out").exists()
