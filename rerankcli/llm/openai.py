"""Backend for an OpenAI-compatible completions server, such as ``vllm serve`` on a cluster node.

Prompts are rendered and truncated here, with the model's own tokenizer (from the stage's
``model``), and sent as token ids to ``/v1/completions``, so the server sees exactly the tokens
the other backends would. A raw prompt (a trained reranker's exact text with its special tokens
written out, e.g. Qwen3-Reranker's) therefore needs nothing of its own: it is rendered without
a chat frame and sent as its ids, never through a chat endpoint. ``NextToken`` uses vLLM's
``logprob_token_ids`` extension (exact log-probabilities of the candidates, not a top-k that
may miss them); ``Continuation`` uses the standard ``echo`` + ``logprobs``. Requests of a batch
go out concurrently (``concurrency``), and 429, 5xx, timeouts and dropped connections are
retried with exponential backoff, honouring a ``Retry-After`` header; any other error stops the
stage with the server's own message.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from rerankcli.core.checks import Check
from rerankcli.core.errors import UserError
from rerankcli.llm.backend import Backend, BackendConfig
from rerankcli.llm.render import Renderer
from rerankcli.llm.requests import (
    Continuation,
    ContinuationLogprobs,
    Generate,
    Generated,
    NextToken,
    Request,
    Response,
    TokenLogprobs,
)

RETRYABLE = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAIConfig(BackendConfig):
    type: Literal["openai"] = Field("openai", description="openai: an OpenAI-compatible completions server")
    base_url: str = Field(description="e.g. http://node17:8000/v1")
    served_model: str | None = Field(None, description="the server's model name (default: the one it lists)")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the key")
    concurrency: int = Field(8, gt=0, description="requests in flight at once")
    batch_size: int = Field(64, gt=0, description="requests the scheduler hands over per batch")
    timeout_s: float = Field(120.0, gt=0, description="seconds to wait for one response")
    max_retries: int = Field(6, ge=0, description="retries of 429, 5xx, timeouts and dropped connections")
    backoff_s: float = Field(1.0, ge=0, description="first retry delay; doubles, capped at 60 s")

    operational: ClassVar[frozenset[str]] = frozenset({
        "base_url", "api_key_env", "concurrency", "batch_size", "timeout_s", "max_retries", "backoff_s"})


class OpenAIBackend(Backend):
    name = "openai"
    config_class = OpenAIConfig
    answers = frozenset({Generate, NextToken, Continuation})
    libraries = ("transformers", "tokenizers")  # the server's own versions are out of sight
    summary = "an OpenAI-compatible completions server (vllm serve): prompts sent as token ids"

    def __init__(self, config: OpenAIConfig, folder: Path, log: Callable[[str], None] = print) -> None:
        try:
            import httpx
            from transformers import AutoTokenizer
        except ImportError as exc:
            raise UserError(f"backend openai needs httpx and transformers ({exc.name} missing): "
                            "pip install 'rerankcli[llm]'") from None
        self.config = config
        self.batch_size = config.batch_size
        self.retries = 0
        key = os.environ.get(config.api_key_env, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(base_url=config.base_url.rstrip("/"), headers=headers,
                                   timeout=config.timeout_s)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        listed = self._request("GET", "/models").get("data", [])
        self.model = config.served_model or self._served_model(listed)
        self.renderer = Renderer(self.tokenizer, config.max_length or self._context_length(listed), config.chat)
        log(f"openai: {self.model} at {config.base_url}, {config.concurrency} requests in flight")

    @classmethod
    def context_length(cls, config: BackendConfig, folder: Path, tokenizer: Any) -> int:
        """Without asking the server (``rerank plan``): the tokenizer's limit, else 4096."""
        return config.max_length or _tokenizer_length(tokenizer)

    @classmethod
    def describe(cls, config: BackendConfig) -> str:
        assert isinstance(config, OpenAIConfig)
        return f"openai server {config.base_url}"

    @classmethod
    def check(cls) -> Check:
        found = super().check()
        from rerankcli.core.versions import versions

        httpx = versions("httpx")["httpx"]
        if httpx == "absent":
            return Check(cls.name, False, "httpx is not installed (pip install 'rerankcli[llm]')")
        return Check(cls.name, found.ok, f"httpx {httpx}, {found.detail}")

    def _answer(self, requests: list[Request]) -> list[Response]:
        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            return list(pool.map(self._one, requests))

    def _one(self, request: Request) -> Response:
        body: dict[str, Any] = {"model": self.model, "temperature": 0.0}
        x = self.renderer.encode_request(request)
        if isinstance(request, NextToken):
            ids = x.targets
            body.update(prompt=x.ids, max_tokens=1, logprobs=len(ids), logprob_token_ids=ids,
                        return_tokens_as_token_ids=True)
            top = self._post(body)["logprobs"]["top_logprobs"][0]
            missing = [c for c, t in zip(request.candidates, ids) if f"token_id:{t}" not in top]
            if missing:
                raise UserError(f"backend openai: the server returned no log-probability for {missing}; "
                                "it must support vLLM's logprob_token_ids (vllm serve does)")
            return TokenLogprobs(x.prompt_tokens, x.truncated,
                                 {c: float(top[f"token_id:{t}"]) for c, t in zip(request.candidates, ids)})
        if isinstance(request, Continuation):
            body.update(prompt=x.ids, max_tokens=1, echo=True, logprobs=0)
            scored = self._post(body)["logprobs"]["token_logprobs"]
            start = x.prompt_tokens
            return ContinuationLogprobs(x.prompt_tokens, x.truncated,
                                        tuple(float(v) for v in scored[start: start + len(x.targets)]))
        assert isinstance(request, Generate)
        body.update(prompt=x.ids, max_tokens=request.max_new_tokens)
        if request.temperature > 0:
            body.update(temperature=request.temperature, seed=request.seed)
        if request.reasoning_effort is not None:
            body["reasoning_effort"] = request.reasoning_effort
        if request.stop:
            body["stop"] = list(request.stop)
        choice = self._post(body, usage=True)
        return Generated(x.prompt_tokens, x.truncated, _text(choice, request.prompt.thinking), choice["new_tokens"],
                         _stopped_by(choice, request.stop))

    def _post(self, body: dict[str, Any], usage: bool = False) -> dict[str, Any]:
        """POST a completion with retries; the first choice (plus generated-token count)."""
        data = self._request("POST", "/completions", body)
        try:
            choice = dict(data["choices"][0])
            if usage:
                choice["new_tokens"] = int(data.get("usage", {}).get("completion_tokens", 0))
            return choice
        except (KeyError, IndexError, TypeError):
            raise UserError(f"backend openai: unexpected response from {self.config.base_url}: "
                            f"{str(data)[:200]}") from None

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        import httpx

        url = f"{self.config.base_url.rstrip('/')}{path}"
        delay, last = self.config.backoff_s, ""
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                self.retries += 1
                time.sleep(delay * (1 + random.random() / 4))
                delay = min(delay * 2, 60.0)
            try:
                reply = self.client.request(method, path, json=body)
            except httpx.TimeoutException:
                last = f"no answer within {self.config.timeout_s:g} s"
                continue
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if reply.status_code in RETRYABLE:
                last = f"HTTP {reply.status_code}"
                delay = max(delay, _retry_after(reply.headers.get("retry-after")))
                continue
            if reply.status_code >= 400:
                raise UserError(f"backend openai: {method} {url} failed with HTTP {reply.status_code}: "
                                f"{_message(reply)}")
            return reply.json()
        raise UserError(f"backend openai: {method} {url} failed after "
                        f"{self.config.max_retries + 1} attempts; last: {last}")

    def _served_model(self, listed: list[dict[str, Any]]) -> str:
        models = [m.get("id") for m in listed]
        if len(models) != 1:
            raise UserError(f"backend openai: the server at {self.config.base_url} serves {models}; "
                            "set served_model")
        return models[0]

    def _context_length(self, listed: list[dict[str, Any]]) -> int:
        """The server's max_model_len (vLLM lists it), else the tokenizer's, else 4096."""
        for entry in listed:
            if entry.get("id") == self.model and entry.get("max_model_len"):
                return int(entry["max_model_len"])
        return _tokenizer_length(self.tokenizer)

    def close(self) -> None:
        self.client.close()


def _tokenizer_length(tokenizer: Any) -> int:
    length = int(getattr(tokenizer, "model_max_length", 0) or 0)
    return length if 0 < length < 1_000_000 else 4096


def _retry_after(value: str | None) -> float:
    try:
        return min(float(value), 60.0) if value else 0.0
    except ValueError:
        return 0.0


def _message(reply: Any) -> str:
    try:
        error = reply.json().get("error", {})
        return str(error.get("message", error))[:300]
    except ValueError:
        return reply.text[:300]


def _text(choice: dict[str, Any], inside_think: bool) -> str:
    """The completion's text as the model wrote it. A server whose reasoning parser moved the
    reasoning out of the text (``reasoning_content``) has it put back in front: bare for a call
    that is already inside a think block, else in its tags, so that the think guard finds it
    and no answer is read out of it."""
    text = choice.get("text") or ""
    reasoning = choice.get("reasoning_content") or choice.get("reasoning")
    if not isinstance(reasoning, str) or not reasoning:
        return text
    return f"{reasoning}{text}" if inside_think else f"<think>{reasoning}</think>{text}"


def _stopped_by(choice: dict[str, Any], stops: tuple[str, ...]) -> str | None:
    """Which stop string ended the completion: vLLM reports it as ``stop_reason``."""
    reason = choice.get("stop_reason")
    return reason if isinstance(reason, str) and reason in stops else None
