"""Benchmark BM25 backends on SciFact: wall time, peak memory and nDCG@10, one run each.

Each backend runs as its own ``rerank run`` process with an empty cache (index built from
scratch, 300 queries, k=1000), so the figures include start-up, analysis and indexing; for
pyserini that includes starting the JVM and importing pyserini. Peak memory is the process's
maximum resident set (for pyserini, Python and the JVM together). The stage column is the
retrieve stage alone, as its manifest records it; "index s" is the Lucene build within it.

Usage: python scripts/bench_bm25.py [--data ../shared/data/scifact]
                                    [--backends pyserini bm25s rank_bm25]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_backend(backend: str, data: Path, work: Path) -> dict[str, float]:
    pipeline = work / f"{backend}.yaml"
    pipeline.write_text(
        f"name: {backend}\noutput: out-{backend}\n"
        f"dataset: {{corpus: {data / 'corpus.jsonl'}, queries: {data / 'queries.jsonl'}, "
        f"qrels: {data / 'qrels' / 'test.tsv'}}}\n"
        f"stages:\n  - {{name: bm25, type: retrieve, method: bm25, backend: {backend}, k: 1000}}\n"
        f"  - {{name: eval, type: evaluate, metrics: [ndcg@10, recall@100, recall@1000]}}\n"
    )
    env = {**os.environ, "RERANK_CACHE_DIR": str(work / f"cache-{backend}")}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "rerankcli", "run", "-q", str(pipeline)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{backend} failed: {proc.stderr.read().decode()}")
    metrics = json.loads((work / f"out-{backend}" / "metrics.json").read_text())["bm25"]
    manifest = json.loads((work / f"out-{backend}" / "bm25.manifest.json").read_text())
    return {"wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024, "stage_s": manifest["wall_s"],
            "index_s": manifest["details"].get("build_s"), **metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "scifact")
    parser.add_argument("--backends", nargs="+", default=["pyserini", "bm25s", "rank_bm25"])
    args = parser.parse_args()
    print(f"# SciFact BM25 backends on {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")
    print("| backend | wall s | peak RSS MiB | stage s | index s | nDCG@10 | R@100 | R@1000 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends:
            r = run_backend(backend, args.data.resolve(), Path(tmp))
            index = f"{r['index_s']:.1f}" if r["index_s"] is not None else "-"
            print(f"| {backend} | {r['wall_s']:.1f} | {r['peak_rss_mib']:.0f} | {r['stage_s']:.1f} | "
                  f"{index} | {r['ndcg@10']:.4f} | {r['recall@100']:.4f} | {r['recall@1000']:.4f} |",
                  flush=True)


if __name__ == "__main__":
    main()
