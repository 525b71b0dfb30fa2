"""In-context reranking, checked against brute force on a tiny random-weight Llama.

The reference runs the whole prompt twice (with the query, then with "N/A") through an eager
model with ``output_attentions=True``: full attention matrices, no KV cache reuse, no row
selection. It sums layers and heads, averages the query's rows, calibrates and masks with torch.
The stage's scores, computed on cached prefixes and recorded rows only, with both queries in one
left-padded batch (their prompts differ in length), must agree to 1e-4.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.fake_llm import rerank_with

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from rerankcli.core.errors import UserError  # noqa: E402
from rerankcli.llm.hf import HFBackend, HFConfig  # noqa: E402
from rerankcli.rerank.candidates import Candidate, Query  # noqa: E402
from rerankcli.rerank.icr import IcrStage, passage_score  # noqa: E402

PASSAGES = [
    "The Manhattan Project produced the first nuclear weapons during World War II.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Paris is the capital and most populous city of France, on the Seine.",
    "Mount Everest is Earth's highest mountain above sea level.",
]
QUERIES = [Query("q1", "what is the capital of france", tuple(Candidate(f"d{i}", t) for i, t in enumerate(PASSAGES))),
           Query("q2", "how do plants make sugar", tuple(Candidate(f"d{i}", t) for i, t in enumerate(PASSAGES[:0:-1])))]


def stage_of(**fields) -> IcrStage:
    return IcrStage(**{"name": "icr", "type": "rerank", "method": "icr", "model": "tiny", "depth": 10, **fields})


@pytest.fixture(scope="module")
def tiny(tiny_llama):
    backend = HFBackend(HFConfig(dtype="float32"), tiny_llama, log=lambda m: None)
    yield backend
    backend.close()



def brute_force_scores(stage, query, backend, tiny_eager, calibrate: bool, mask: bool) -> dict[str, float]:
    """ICR from full attention matrices of the whole prompt, once per probe, nothing reused."""
    template = stage.template(Path("."))
    prompt = template.attention_prompt([c.text for c in query.candidates],
                                       [str(k + 1) for k in range(len(query.candidates))])
    probes = (query.text, "N/A")
    rendered = backend.renderer.render_probes(prompt, probes)
    prefix = rendered.prefix.ids
    received = []
    for suffix, rows in zip(rendered.suffixes, rendered.probe_rows):
        with torch.inference_mode():
            attentions = tiny_eager(torch.tensor([prefix + suffix]), output_attentions=True).attentions
        total = sum(layer[0].double().sum(dim=0) for layer in attentions)  # [rows, keys], all heads
        received.append(total[[len(prefix) + r for r in rows]].mean(dim=0))
    scores = {}
    for k, candidate in enumerate(query.candidates):
        a, b = rendered.prefix.spans[str(k)]
        tokens = received[0][a:b] - (received[1][a:b] if calibrate else 0)
        if calibrate and mask:
            tokens = tokens[tokens > tokens.mean() - 2 * tokens.std()]
        scores[candidate.docid] = float(tokens.sum())
    return scores


@pytest.mark.parametrize("calibrate, mask", [(True, True), (True, False), (False, False)])
def test_scores_equal_brute_force_from_full_attention(tiny, tiny_eager, calibrate, mask):
    stage = stage_of(calibration=calibrate, mask_outliers=mask)
    scores, accounting, state = rerank_with(stage, QUERIES, tiny)
    for query in QUERIES:
        expected = brute_force_scores(stage, query, tiny, tiny_eager, calibrate, mask)
        assert scores[query.qid] == pytest.approx(expected, abs=1e-4)
    passes_per_query = 3 if calibrate else 2  # the passages once, then each probe on their cache
    assert stage.method_details(state)["forward_passes"] == passes_per_query * len(QUERIES)
    assert accounting.manifest()["requests"] == {"Attention": len(QUERIES)}
    assert accounting.manifest()["batches"] == 1  # both queries in one left-padded batch


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_scores_are_finite_in_both_precisions(tiny_llama, dtype):
    backend = HFBackend(HFConfig(dtype=dtype), tiny_llama, log=lambda m: None)
    stage = stage_of()
    scores, _, _ = rerank_with(stage, QUERIES, backend)
    assert all(math.isfinite(v) for by_doc in scores.values() for v in by_doc.values())
    assert all(len(set(by_doc.values())) == len(by_doc) for by_doc in scores.values())


def test_masking_drops_only_low_outliers():
    query = [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, -9.0]
    assert passage_score(query, [0.0] * 10, 2.0) == pytest.approx(4.5)  # the -9.0 token is masked
    assert passage_score(query, [0.0] * 10, None) == pytest.approx(-4.5)
    assert passage_score([0.3], [0.1], 2.0) == pytest.approx(0.2)  # one token: no spread, no mask
    assert passage_score([0.3, 0.2], None, 2.0) == pytest.approx(0.5)


def test_a_template_with_the_query_before_the_passages_is_refused(tmp_path):
    (tmp_path / "early.yaml").write_text("user: 'Query: {query}\\n{passages}'\n")
    with pytest.raises(UserError, match=r"\{query\} once, after \{passages\}"):
        stage_of(prompt="early.yaml").template(tmp_path)
