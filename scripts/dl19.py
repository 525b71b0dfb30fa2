"""DL19 for the benchmark scripts: passages, queries, qrels and the BM25 top-k as rerank candidates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rerankcli.core.formats import read_corpus, read_qrels, read_queries
from rerankcli.core.runs import Run, read_run
from rerankcli.evaluate.metrics import evaluate, parse_metric
from rerankcli.rerank.candidates import Candidate, Query

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "trec-dl19-passage"


@dataclass
class DL19:
    texts: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    bm25: Run  # judged queries, top-depth
    candidates: list[Query]

    @property
    def pairs(self) -> int:
        return sum(len(q.candidates) for q in self.candidates)

    def ndcg10(self, run: Run) -> float:
        """nDCG@10 with TREC DL's binary threshold (relevance 2) for the judged queries."""
        return evaluate(run, self.qrels, [parse_metric("ndcg@10")], relevance_level=2).means["ndcg@10"]


def load(data: Path, depth: int, limit: int | None = None) -> DL19:
    """The first ``limit`` judged queries (all by default) with their BM25 top-``depth``."""
    corpus = read_corpus(data / "corpus.jsonl")
    texts = {docid: corpus.contents(i) for i, docid in enumerate(corpus.ids)}
    queries = read_queries(data / "queries.tsv")
    qrels = read_qrels(data / "qrels.txt")
    run = read_run(data / "bm25.top100.trec")
    qids = [q for q in run.qids if q in qrels][:limit]
    bm25 = Run({q: run.scores[q] for q in qids}).top(depth)
    candidates = [Query(q, queries[q], tuple(Candidate(d, texts[d]) for d, _ in bm25.ranked(q))) for q in qids]
    return DL19(texts, queries, qrels, bm25, candidates)


def backend_config(backend: str, model: str, batch_size: int, max_length: int = 4096) -> dict:
    """The backend settings of the benchmarks: vLLM in-process and eager in float32 on a CPU
    (host memory is its KV cache: 30%), its own defaults on a GPU; hf with ``batch_size``."""
    import torch

    if backend == "vllm":
        config: dict = {"type": "vllm", "max_length": max_length}
        if not torch.cuda.is_available():
            config.update(dtype="float32", gpu_memory_utilization=0.3, enforce_eager=True, multiprocessing=False)
    else:
        config = {"type": "hf", "batch_size": batch_size}
    if "gemma" in model:  # a base model: plain prompts, not the instruction chat template
        config["chat"] = False
    return config


_POOL = None


def open_models():
    """The benchmark process's pool of loaded models (``close_backends`` releases them)."""
    global _POOL
    if _POOL is None:
        from rerankcli.llm.registry import OpenBackends

        _POOL = OpenBackends()
    return _POOL


def close_backends() -> None:
    open_models().close()


def rerank(stage, queries, backend):
    """(scores, accounting, method record) of ``stage`` over ``queries`` on ``backend``, in this process."""
    from rerankcli.execution.llm_session import LLMSession

    return LLMSession(stage, Path(__file__).resolve().parents[1], backend=backend).rerank(queries)


def fresh_backend(stage, model, store):
    """The stage's backend (opened once per process), with vLLM's prefix cache emptied so that a
    row gets no cache hits from the previous one."""
    backend = open_models().open(stage.backend_config(), model, store, lambda m: None)
    if hasattr(backend, "llm"):
        backend.llm.reset_prefix_cache()
    return backend
