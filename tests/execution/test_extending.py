"""A method and a backend written outside the package get everything the shipped ones get.

This file is the worked example of docs/extending.md, kept honest: a single-elimination
tournament ("knockout") reranker and a small backend that judges passages by the query words
they contain are defined here, registered with one line each, and run in real pipelines over
the demo collection: plain, interrupted and resumed, in two shards merged, on two Ray actors,
and planned with ``rerank plan``'s machinery. None of those modules knows about them.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
from pydantic import Field

from rerankcli.core.errors import Interrupted
from rerankcli.core.runs import read_run
from rerankcli.execution.executor_config import ExecutorConfig
from rerankcli.execution.shard import Shard
from rerankcli.llm.backend import Backend, BackendConfig
from rerankcli.llm.registry import register_backend
from rerankcli.llm.requests import NextToken, Passage, Request, Response, TokenLogprobs
from rerankcli.llm.scheduler import Program
from rerankcli.pipeline.config import load_pipeline
from rerankcli.pipeline.plan import plan_pipeline
from rerankcli.pipeline.registry import register_method
from rerankcli.pipeline.runner import Runner
from rerankcli.rerank.candidates import Query
from rerankcli.rerank.llm_method import LLMRerankStage, answer_probabilities
from rerankcli.rerank.templates import Template
from tests.conftest import DEMO

ROOT = Path(__file__).resolve().parents[2]
DEPTH = 8


# -- the method: one class -----------------------------------------------------------------------

class KnockoutStage(LLMRerankStage):
    """Adjacent candidates meet in pairs, the winner goes on; a candidate scores the round it reached."""

    method: Literal["knockout"]
    summary: ClassVar[str] = "single-elimination tournament of pairwise comparisons: n - 1 calls per query"
    default_prompt: ClassVar[str] = "pairwise"
    placeholders: ClassVar = ({"query", "passage_a", "passage_b"}, {"query", "passage_a", "passage_b"})
    asks: ClassVar = (NextToken,)

    def prepare_method(self, backend: Backend) -> dict[str, list[str]]:
        """The answer forms this tokenizer keeps as one token."""
        return {label: backend.single_tokens([label, f" {label}"]) for label in ("A", "B")}

    def program(self, query: Query, template: Template, prepared: dict[str, list[str]]) -> Program:
        alive, reached, rounds = list(query.candidates), {c.docid: 0 for c in query.candidates}, 0
        forms = tuple(prepared["A"] + prepared["B"])
        while len(alive) > 1:
            rounds += 1
            pairs = [(alive[i], alive[i + 1]) for i in range(0, len(alive) - 1, 2)]
            answers = yield [NextToken(template.pair_prompt(query.text, a.text, b.text, self.max_passage_tokens),
                                       forms) for a, b in pairs]
            winners = []
            for (a, b), answer in zip(pairs, answers):
                votes = answer_probabilities(answer.logprobs, prepared)  # type: ignore[union-attr]
                winners.append(a if votes["A"] >= votes["B"] else b)
            alive = winners + ([alive[-1]] if len(alive) % 2 else [])
            for survivor in alive:
                reached[survivor.docid] = rounds
        n = len(query.candidates)
        scores = {c.docid: reached[c.docid] + (n - i) / (n + 1) for i, c in enumerate(query.candidates)}
        return scores, {"rounds": rounds}

    def planned_calls(self, n: int) -> tuple[int, int]:
        return max(n - 1, 0), max(n - 1, 0)

    def method_details(self, reranked: Any) -> dict[str, Any]:
        return {"rounds": sum(r["rounds"] for r in reranked.records.values())}


# -- the backend: one class and its config -------------------------------------------------------

class OverlapConfig(BackendConfig):
    type: Literal["overlap"] = "overlap"
    batch_size: int = Field(16, gt=0, description="requests per call")
    interrupt_after: int | None = Field(None, description="raise KeyboardInterrupt on this call (tests)")

    operational: ClassVar[frozenset[str]] = frozenset({"batch_size", "interrupt_after"})


class OverlapBackend(Backend):
    """Prefers the passage that shares more words with the query ("A" on a tie)."""

    name = "overlap"
    config_class = OverlapConfig
    answers = frozenset({NextToken})
    summary = "a judge by query-word overlap, for tests"

    def __init__(self, config: OverlapConfig, folder: Path, log: Callable[[str], None] = print) -> None:
        self.config, self.batch_size, self.calls = config, config.batch_size, 0

    def single_tokens(self, texts: Any) -> list[str]:
        return list(texts)

    def _answer(self, requests: list[Request]) -> list[Response]:
        self.calls += 1
        if self.calls == self.config.interrupt_after:
            raise KeyboardInterrupt
        return [self._judge(r) for r in requests]  # type: ignore[arg-type]

    @staticmethod
    def _judge(request: NextToken) -> TokenLogprobs:
        text = "".join(p for p in request.prompt.parts if isinstance(p, str))
        query = set(words(re.search(r'query "(.*?)"', text, re.S).group(1)))  # type: ignore[union-attr]
        a, b = (len(query & set(words(p.text))) for p in request.prompt.parts if isinstance(p, Passage))
        preferred = "A" if a >= b else "B"
        return TokenLogprobs(1, 0, {c: -1.0 if c.strip() == preferred else -3.0 for c in request.candidates})


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


# -- registration: one line each ------------------------------------------------------------------

def register(patch: pytest.MonkeyPatch) -> None:
    """What a plugin does at import time; ``patch`` undoes it, so other tests see the shipped set."""
    from rerankcli.llm.registry import BACKENDS
    from rerankcli.pipeline.registry import STAGES

    patch.setitem(STAGES, "rerank", dict(STAGES["rerank"]))
    patch.setitem(BACKENDS, OverlapBackend.name, OverlapBackend)  # remembered as absent: removed on undo
    register_method("rerank", "knockout", KnockoutStage)
    register_backend(OverlapBackend)


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    register(monkeypatch)


# -- pipelines ------------------------------------------------------------------------------------

def pipeline(folder: Path, **backend: Any) -> Path:
    """BM25 over the demo collection, the knockout reranker on its top DEPTH, nDCG@10 of both."""
    (folder / "judge").mkdir(exist_ok=True)
    (folder / "judge" / "README").write_text("a model folder: the overlap judge has no weights\n")
    config = {"name": "knockout", "output": "out",
              "dataset": {"corpus": str(DEMO / "corpus.jsonl"), "queries": str(DEMO / "queries.tsv"),
                          "qrels": str(DEMO / "qrels.txt")},
              "stages": [{"name": "bm25", "type": "retrieve", "method": "bm25", "k": 20},
                         {"name": "knockout", "type": "rerank", "method": "knockout", "model": "./judge",
                          "depth": DEPTH, "backend": {"type": "overlap", **backend}},
                         {"name": "eval", "type": "evaluate", "inputs": ["bm25", "knockout"], "metrics": ["ndcg@10"]}]}
    path = folder / "knockout.yaml"
    path.write_text(json.dumps(config))
    return path


def run(path: Path, cache: Path, **options: Any) -> Path:
    Runner(load_pipeline(path), cache, log=lambda message: None, show_progress=False, **options).run()
    return path.parent / "out"


def details(out: Path) -> dict[str, Any]:
    found = json.loads((out / "knockout.manifest.json").read_text())["details"]
    return {"calls": found["llm"]["calls"], "rounds": found["rounds"], "restored": found["restored_queries"]}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("knockout")
    with pytest.MonkeyPatch.context() as patch:  # the autouse fixture does not reach module scope
        register(patch)
        return run(pipeline(folder), folder / "cache")


def test_the_method_runs_in_a_pipeline_and_finds_each_querys_best_match(uninterrupted) -> None:
    bm25, reranked = read_run(uninterrupted / "bm25.trec"), read_run(uninterrupted / "knockout.trec")
    queries = {line.split("\t")[0]: line.split("\t")[1] for line in (DEMO / "queries.tsv").read_text().splitlines()}
    texts = {}
    for line in (DEMO / "corpus.jsonl").read_text().splitlines():
        doc = json.loads(line)
        texts[doc["_id"]] = f"{doc.get('title', '')} {doc['text']}"
    for qid in bm25.qids:
        candidates = [d for d, _ in bm25.ranked(qid)[:DEPTH]]
        overlap = {d: len(set(words(queries[qid])) & set(words(texts[d]))) for d in candidates}
        assert overlap[reranked.ranked(qid)[0][0]] == max(overlap.values())
    assert details(uninterrupted) == {"calls": len(bm25.qids) * (DEPTH - 1), "rounds": len(bm25.qids) * 3,
                                      "restored": 0}


def test_plan_counts_its_calls_from_the_methods_formula(tmp_path) -> None:
    path = pipeline(tmp_path)
    plans = {p.stage: p for p in plan_pipeline(Runner(load_pipeline(path), tmp_path / "cache",
                                                      log=lambda m: None, show_progress=False))}
    assert plans["knockout"].method == "knockout" and plans["knockout"].runs_on == "overlap"
    assert plans["knockout"].calls == plans["bm25"].queries * (DEPTH - 1)


def test_an_interrupted_run_resumes_to_the_identical_run(uninterrupted, tmp_path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(Interrupted, match="SIGINT"):  # the runner says what it saved
        run(pipeline(tmp_path, interrupt_after=40, batch_size=2), cache)
    out = run(pipeline(tmp_path), cache)  # the same stage key: interrupt_after is operational
    assert (out / "knockout.trec").read_bytes() == (uninterrupted / "knockout.trec").read_bytes()
    assert details(out)["restored"] > 0 and details(out)["calls"] == details(uninterrupted)["calls"]


def test_two_shards_merge_into_the_unsharded_run(uninterrupted, tmp_path) -> None:
    path, cache = pipeline(tmp_path), tmp_path / "cache"
    for index in (0, 1):
        run(path, cache, shard=Shard(index, 2))
    out = run(path, cache, merge_only=True)
    assert (out / "knockout.trec").read_bytes() == (uninterrupted / "knockout.trec").read_bytes()
    assert details(out)["calls"] == details(uninterrupted)["calls"]


def test_two_ray_actors_compute_the_identical_run(uninterrupted, tmp_path) -> None:
    ray = pytest.importorskip("ray")
    # the actors import this test module by name, as they would a plugin's installed module
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": f"{ROOT}:{':'.join(p for p in sys.path if p)}"}})
    try:
        out = run(pipeline(tmp_path), tmp_path / "cache", executor=ExecutorConfig(type="ray", workers=2))
    finally:
        ray.shutdown()
    assert (out / "knockout.trec").read_bytes() == (uninterrupted / "knockout.trec").read_bytes()
    assert details(out)["calls"] == details(uninterrupted)["calls"]


def test_an_installed_plugin_is_found_by_the_command_line(tmp_path, rerank) -> None:
    """A package that names its module under the ``rerankcli.plugins`` entry points needs no code of ours."""
    site = tmp_path / "site"
    (site / "knockout_plugin-1.0.dist-info").mkdir(parents=True)
    (site / "knockout_plugin-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: knockout-plugin\nVersion: 1.0\n")
    (site / "knockout_plugin-1.0.dist-info" / "entry_points.txt").write_text(
        "[rerankcli.plugins]\nknockout = knockout_plugin\n")
    (site / "knockout_plugin.py").write_text(
        "from rerankcli.llm.registry import register_backend\n"
        "from rerankcli.pipeline.registry import register_method\n"
        "from tests.execution.test_extending import KnockoutStage, OverlapBackend\n\n"
        "register_method('rerank', 'knockout', KnockoutStage)\n"
        "register_backend(OverlapBackend)\n")
    env = {"PYTHONPATH": f"{site}:{ROOT}"}
    listed = rerank("methods", "knockout", env=env)
    assert listed.code == 0 and "single-elimination" in listed.out
    result = rerank("run", pipeline(tmp_path), "-q", env=env)
    assert result.code == 0, result.err
    assert len(read_run(tmp_path / "out" / "knockout.trec").qids) == 24
