"""A small OpenAI-compatible completions server for tests: a real model behind real HTTP.

It serves a transformers model (computed here with plain transformers, independently of the
hf backend) with the subset of ``/v1/completions`` that vLLM's server offers and the openai
backend uses: token-id prompts, greedy generation with ``stop``, ``echo`` + ``logprobs`` and
vLLM's ``logprob_token_ids`` with ``return_tokens_as_token_ids``, and its ``stop_reason``;
``split_reasoning`` answers as a server running a reasoning parser. ``faults`` makes the next
requests fail on purpose: ``"429"`` answers Too Many Requests, ``"slow:S"`` sleeps S seconds
before answering (past the client's timeout).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class CompletionsServer:
    def __init__(self, folder: str, name: str = "tiny") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.name = name
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        self.faults: deque[str] = deque()
        #: answer as a server with a reasoning parser does: text before "</think>" in reasoning_content
        self.split_reasoning = False
        self.seen: list[str] = []  # what happened to each request: "ok", "429", "slow"
        self.bodies: list[dict[str, Any]] = []  # every request's JSON body, in arrival order
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- the model ------------------------------------------------------------------------
    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        torch = self.torch
        prompt = body["prompt"]
        ids = prompt if isinstance(prompt, list) else self.tokenizer(prompt)["input_ids"]
        max_tokens = int(body.get("max_tokens", 16))
        with torch.inference_mode():
            logits = self.model(torch.tensor([ids])).logits[0].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            new = self.model.generate(torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.eos_token_id)[0, len(ids):].tolist()
        eos = self.tokenizer.eos_token_id
        if eos in new:
            new = new[: new.index(eos)]
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        choice: dict[str, Any] = {"index": 0, "finish_reason": "length"}
        for stop in body.get("stop") or []:
            if stop in text:
                text = text[: text.index(stop)]
                choice.update(finish_reason="stop", stop_reason=stop)  # as vLLM's server reports it
        if self.split_reasoning:  # a server-side reasoning parser: the think block moves out of the text
            reasoning, closed, rest = text.partition("</think>")
            choice["reasoning_content"], text = reasoning, rest if closed else ""
        choice["text"] = text
        if body.get("logprobs") is not None:
            first = logprobs[-1]
            wanted = body.get("logprob_token_ids") or first.topk(max(1, body["logprobs"])).indices.tolist()
            name = (lambda t: f"token_id:{t}") if body.get("return_tokens_as_token_ids") else \
                (lambda t: self.tokenizer.decode([t]))
            token_logprobs = [None] + [float(logprobs[i][t]) for i, t in enumerate(ids[1:])] \
                if body.get("echo") else []
            token_logprobs.append(float(first[new[0]]) if new else None)
            choice["logprobs"] = {"token_logprobs": token_logprobs,
                                  "top_logprobs": [{name(t): float(first[t]) for t in wanted}]}
        return {"id": "cmpl-test", "object": "text_completion", "model": self.name,
                "choices": [choice],
                "usage": {"prompt_tokens": len(ids), "completion_tokens": len(new)}}

    # -- HTTP ---------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout we caused on purpose)

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [
                        {"id": server.name, "object": "model", "max_model_len": 2048}]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    fault = server.faults.popleft() if server.faults else None
                    server.seen.append(fault.split(":")[0] if fault else "ok")
                    server.bodies.append(body)
                if fault == "429":
                    self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
                    return
                if fault and fault.startswith("slow:"):
                    time.sleep(float(fault.split(":")[1]))
                if body.get("model") != server.name:
                    self._send(404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}})
                    return
                with server.lock:
                    payload = server.complete(body)
                self._send(200, payload)

        return Handler
