"""Time ``rerank compare`` of five DL19 runs against the same comparison in a plain ranx script.

The five runs: BM25 and SPLADE++ as shipped, and their RRF, CombSUM and CombMNZ fusions
(written by rerankcli). Both commands compute nDCG@10, MRR@10, Recall@100 and MAP and a paired
t-test of every run against BM25. Each runs as a fresh process, as from the shell:

- cold: the first call with empty bytecode caches (a new PYTHONPYCACHEPREFIX) and, for ranx,
  an empty numba cache, as right after installation;
- warm: the median of ``--repeats`` later calls with those caches filled.

    .venv/bin/python scripts/bench_compare.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "trec-dl19-passage"
METRICS = ["ndcg@10", "mrr@10", "recall@100", "map"]

RANX_SCRIPT = """
import sys
from ranx import Qrels, Run, compare
qrels = Qrels.from_file(sys.argv[1], kind="trec")
runs = [Run.from_file(path, kind="trec", name=path.rsplit("/", 1)[-1]) for path in sys.argv[2:]]
report = compare(qrels, runs, metrics=["ndcg@10", "mrr@10", "recall@100", "map"], stat_test="student")
print(report)
"""


def write_runs(folder: Path) -> list[Path]:
    sys.path.insert(0, str(ROOT))
    from rerankcli.core.runs import read_run, write_run
    from rerankcli.retrieve.fusion import comb, rrf

    shipped = [DATA / "bm25.top100.trec", DATA / "splade-pp-ed.top100.trec"]
    inputs = [read_run(path) for path in shipped]
    fused = {"rrf": rrf(inputs, [1.0, 1.0]), "combsum": comb(inputs, [1.0, 1.0], "minmax", False),
             "combmnz": comb(inputs, [1.0, 1.0], "minmax", True)}
    paths = list(shipped)
    for name, run in fused.items():
        paths.append(folder / f"{name}.trec")
        write_run(run.top(100), paths[-1], name)
    return paths


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, **env})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        runs = [str(p) for p in write_runs(folder)]
        qrels = str(DATA / "qrels.txt")
        (folder / "ranx_compare.py").write_text(RANX_SCRIPT)
        metric_args = [arg for m in METRICS for arg in ("-m", m)]
        commands = {
            "rerank compare": [str(ROOT / ".venv" / "bin" / "rerank"), "compare", *runs, "--qrels", qrels,
                               *metric_args],
            "ranx script": [sys.executable, str(folder / "ranx_compare.py"), qrels, *runs],
        }
        print(f"5 DL19 runs (43 queries, 100 documents each), {len(METRICS)} metrics, paired t-test vs BM25")
        print("| command | cold s | warm s (median) |")
        print("|---|---:|---:|")
        for name, command in commands.items():
            env = {"PYTHONPYCACHEPREFIX": str(folder / f"pycache-{name[:5]}"),
                   "NUMBA_CACHE_DIR": str(folder / f"numba-{name[:5]}")}
            cold = timed(command, env)
            warm = statistics.median(timed(command, env) for _ in range(args.repeats))
            print(f"| {name} | {cold:.2f} | {warm:.2f} |")


if __name__ == "__main__":
    main()
