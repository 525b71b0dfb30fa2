"""Peak memory and wall time of ``rerank eval``, ``compare`` and ``diff`` as runs grow deep.

Synthetic data, fixed seed: for each size, two runs of ``DEPTH`` documents per query (run B
is run A with every score perturbed, so the orders differ everywhere, as two rerankers' do)
and qrels judging ``JUDGED`` random documents per query with grades 0-3. Sizes:

    documents per query    queries    lines per run
    1,000                  50         50,000
    10,000                 50         500,000
    100,000                1          100,000
    100,000                10         1,000,000

Each command runs as a fresh process, as from the shell (``python -m rerankcli``); wall time
includes start-up and reading both run files; CPU is the process's user + system time, which
other load on a shared machine disturbs less than wall time. Peak memory is the child's maximum
resident set from ``os.wait4`` (its own ``ru_maxrss``, not the maximum over earlier children).
Every command must exit 0. Prints a markdown table.

    .venv/bin/python scripts/bench_memory.py [--sizes 1000:50 10000:50 100000:1 100000:10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

JUDGED = 200  # judged documents per query
SIZES = ("1000:50", "10000:50", "100000:1", "100000:10")


def write_data(folder: Path, depth: int, queries: int, seed: int = 0) -> tuple[Path, Path, Path]:
    """Runs A and B and their qrels for ``queries`` queries of ``depth`` documents, in ``folder``."""
    rng = np.random.default_rng(seed)
    run_a, run_b, qrels = folder / "a.trec", folder / "b.trec", folder / "qrels.txt"
    with open(run_a, "w") as out_a, open(run_b, "w") as out_b, open(qrels, "w") as out_q:
        for q in range(queries):
            qid = f"q{q}"
            docids = np.array([f"d{i}" for i in range(depth)])
            scores_a = np.sort(rng.random(depth))[::-1]
            scores_b = scores_a + rng.normal(0.0, 0.05, depth)
            for out, scores, tag in ((out_a, scores_a, "a"), (out_b, scores_b, "b")):
                order = np.argsort(-scores, kind="stable")
                out.writelines(f"{qid} Q0 {docids[i]} {rank} {float(scores[i])!r} {tag}\n"
                               for rank, i in enumerate(order, start=1))
            judged = rng.choice(depth, size=min(JUDGED, depth), replace=False)
            out_q.writelines(f"{qid} 0 {docids[i]} {rng.integers(0, 4)}\n" for i in sorted(judged))
    return run_a, run_b, qrels


def measure(command: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MiB) of one process running ``command``; it must exit 0."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode != 0:
        last = (err.strip().splitlines() or [""])[-1]
        raise SystemExit(f"{' '.join(command)} exited {proc.returncode}: {last[:300]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), metavar="DEPTH:QUERIES")
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell; the median is shown")
    args = parser.parse_args()
    rerank = [sys.executable, "-m", "rerankcli"]
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(f"{os.cpu_count()} cores, {memory:.0f} GiB, Python {platform.python_version()}, "
          f"{platform.system()} {platform.machine()}; median of {args.repeats} runs\n")
    print("| docs/query | queries | lines per run | command | wall s | CPU s | peak RSS MiB |")
    print("|---:|---:|---:|---|---:|---:|---:|")
    for size in args.sizes:
        depth, queries = (int(x) for x in size.split(":"))
        with tempfile.TemporaryDirectory() as tmp:
            run_a, run_b, qrels = write_data(Path(tmp), depth, queries)
            commands = {
                "eval": [*rerank, "eval", run_a, run_b, "--qrels", qrels],
                "compare": [*rerank, "compare", run_a, run_b, "--qrels", qrels],
                "diff": [*rerank, "diff", run_a, run_b],
            }
            for name, command in commands.items():
                results = [measure([str(c) for c in command]) for _ in range(args.repeats)]
                wall, cpu, rss = (statistics.median(r[i] for r in results) for i in range(3))
                print(f"| {depth:,} | {queries} | {depth * queries:,} | {name} | {wall:.2f} | {cpu:.2f} | {rss:.0f} |",
                      flush=True)


if __name__ == "__main__":
    main()
