"""``rerank plan``: what each stage of a pipeline would cost, before any model runs.

For every stage: its key and whether it is cached, its queries and candidates, and for LLM
rerank stages the model calls (from the method's formula, per query) and the prompt tokens
(from the model's tokenizer), and where it would run.

Calls follow from the number of candidates alone for every method except PRP's sorts, whose
prompts depend on the answers; for those the plan gives the range the formulas allow. Prompt
tokens are counted by rendering the prompts the method would send, exactly as the backend
renders them (chat template, truncation), with a stand-in model that answers every request
neutrally. They are exact when the prompts do not depend on earlier answers and the
candidates are known (the input run is cached or loaded from a file); otherwise they are an
estimate, marked "≈". Generated tokens are a range: none, up to every generating call's limit
(a reasoning stage's think budget included). Only the tokenizer is loaded; the model's weights
are not.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

from rerankcli.core.errors import UserError
from rerankcli.core.runs import Run, read_run
from rerankcli.execution.llm_session import LLMSession
from rerankcli.llm.backend import Backend
from rerankcli.llm.registry import backend_class, model_folder
from rerankcli.llm.render import Renderer
from rerankcli.llm.requests import (
    Attention,
    AttentionMass,
    Continuation,
    ContinuationLogprobs,
    Generate,
    Generated,
    NextToken,
    Request,
    Response,
    TokenLogprobs,
)
from rerankcli.pipeline.runner import Runner
from rerankcli.rerank.candidates import Candidate, Query, RerankStage
from rerankcli.rerank.llm_method import LLMRerankStage
from rerankcli.retrieve.load import LoadStage


@dataclass
class StagePlan:
    stage: str
    type: str
    method: str
    key: str
    cached: bool
    queries: int | None = None
    candidates: int | None = None
    calls: int | None = None  # exact number of model calls, when the answers cannot change it
    calls_range: tuple[int, int] | None = None  # (least, most) when they can
    prompt_tokens: int | None = None  # exact, or an estimate when tokens_exact is false
    tokens_exact: bool = False
    prompt_tokens_range: tuple[int, int] | None = None  # with calls_range: mean prompt × (least, most)
    #: tokens the model may generate: 0 up to every generating call's limit (reasoning budgets included)
    generated_tokens_range: tuple[int, int] | None = None
    runs_on: str = ""
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class PlanBackend(Backend):
    """Answers every request neutrally without a model, counting prompt tokens as backends do."""

    name = "plan"
    answers = frozenset({Generate, NextToken, Continuation, Attention})

    def __init__(self, renderer: Renderer, batch_size: int = 64) -> None:
        self.renderer, self.batch_size = renderer, batch_size
        self.generation_limit = 0  # the sum of every Generate request's max_new_tokens
        self.generations = 0  # Generate requests answered

    def _answer(self, requests: list[Request]) -> list[Response]:
        return [self._neutral(r) for r in requests]

    def _neutral(self, request: Request) -> Response:
        if not isinstance(request, Attention):
            x = self.renderer.encode_request(request)
            if isinstance(request, NextToken):
                return TokenLogprobs(x.prompt_tokens, x.truncated, {c: 0.0 for c in request.candidates})
            if isinstance(request, Continuation):
                return ContinuationLogprobs(x.prompt_tokens, x.truncated, tuple(0.0 for _ in x.targets))
            assert isinstance(request, Generate)
            self.generation_limit += request.max_new_tokens
            self.generations += 1
            return Generated(x.prompt_tokens, x.truncated, "", 0)
        probes = self.renderer.render_probes(request.prompt, request.probes, reserve=0)
        tokens = len(probes.prefix.ids) + max(len(s) for s in probes.suffixes)
        rows = tuple(tuple(0.0 for _ in probes.prefix.ids) for _ in request.probes)
        return AttentionMass(tokens, probes.prefix.truncated, rows, probes.prefix.spans)


def plan_pipeline(runner: Runner) -> list[StagePlan]:
    """One ``StagePlan`` per stage, in order; raises ``UserError`` before anything runs."""
    keys = runner.plan()
    pipeline = runner.pipeline
    lengths: dict[str, tuple[dict[str, int], Run | None, bool]] = {}  # stage -> per-query lengths, run, exact
    plans = []
    for stage in pipeline.stages:
        key = keys[stage.name][0]
        plan = StagePlan(stage.name, stage.type, _method(stage), key, runner.cached(key))
        inputs = pipeline.inputs[stage.name]
        shape = _shape(runner, stage, key, inputs, lengths)
        if shape is not None:
            lengths[stage.name] = shape
            plan.queries = len(shape[0])
        if isinstance(stage, RerankStage) and inputs and inputs[0] in lengths:
            per_query_n, run, exact = lengths[inputs[0]]
            n = {q: min(stage.depth, m) for q, m in per_query_n.items()}
            plan.candidates = sum(n.values())
            if isinstance(stage, LLMRerankStage):
                _plan_llm(runner, stage, plan, n, run, exact)
        plans.append(plan)
    return plans


def _method(stage: Any) -> str:
    method = getattr(stage, "method", "")
    strategy = getattr(stage, "strategy", None)
    return f"{method}/{strategy}" if strategy else method


def _shape(runner: Runner, stage: Any, key: str, inputs: list[str],
           known: dict[str, tuple[dict[str, int], Run | None, bool]]) -> tuple[dict[str, int], Run | None, bool] | None:
    """Documents per query of the stage's output run, the run itself if known, and whether exact."""
    if stage.produces != "run":
        return None
    if runner.cached(key):
        run = read_run(runner.store.stage_dir(key) / "run.trec")
        return {q: len(d) for q, d in run.scores.items()}, run, True
    if isinstance(stage, LoadStage):
        run = stage.execute(runner.ctx, []).run
        assert run is not None
        return {q: len(d) for q, d in run.scores.items()}, run, True
    if isinstance(stage, RerankStage) and inputs and inputs[0] in known:
        return known[inputs[0]]  # a reranker keeps its input's documents
    k = getattr(stage, "k", None)
    if stage.reads == "none" and k is not None and runner.ctx.dataset.has("queries"):
        return {q: k for q in runner.ctx.dataset.all_queries()}, None, False  # k per query, at most
    return None


def _plan_llm(runner: Runner, stage: LLMRerankStage, plan: StagePlan, n: dict[str, int],
              run: Run | None, exact_input: bool) -> None:
    ranges = [stage.planned_calls(m) for m in n.values()]
    low, high = sum(r[0] for r in ranges), sum(r[1] for r in ranges)
    if low == high:
        plan.calls = low
    else:
        plan.calls_range = (low, high)
    plan.runs_on = _runs_on(runner, stage)
    try:
        renderer = _renderer(runner, stage)
    except (UserError, OSError, ValueError) as exc:
        plan.note = f"prompt tokens not counted: {str(exc).splitlines()[0]}"
        return
    queries = _queries(runner, stage, n, run)
    backend = PlanBackend(renderer)
    with LLMSession(stage, runner.ctx.base_dir, backend=backend) as session:
        results, _ = session.score(queries)
    plan.prompt_tokens = sum(r.usage.prompt_tokens for r in results.values())
    plan.tokens_exact = exact_input and stage.prompts_known_in_advance()
    asked = sum(sum(r.usage.requests.values()) for r in results.values())
    if backend.generation_limit:  # the neutral answers took one path: scale it to the most calls
        generations = [stage.planned_generations(m) for m in n.values()]
        if all(g is not None for g in generations):  # the method knows how many calls generate
            most = round(backend.generation_limit / backend.generations * sum(g for g in generations))  # type: ignore[misc]
        elif plan.calls_range is None or not asked:
            most = backend.generation_limit
        else:
            most = round(backend.generation_limit * high / asked)
        plan.generated_tokens_range = (0, most)
    if plan.calls_range is not None and asked:
        mean = plan.prompt_tokens / asked
        plan.prompt_tokens_range = (round(mean * low), round(mean * high))
        plan.prompt_tokens = None
    if not exact_input:
        plan.note = "candidates not known yet: prompt tokens from a sample of the corpus"


def _queries(runner: Runner, stage: LLMRerankStage, n: dict[str, int], run: Run | None) -> list[Query]:
    """The stage's candidates when the input run is known, else a seeded sample of passages."""
    if run is not None:
        return stage.candidates(runner.ctx, run)
    corpus = runner.ctx.dataset.corpus()
    texts = runner.ctx.dataset.all_queries()
    rng = random.Random(0)
    out = []
    for qid, m in n.items():
        picks = rng.sample(range(len(corpus.ids)), min(m, len(corpus.ids)))
        out.append(Query(qid, texts[qid], tuple(Candidate(corpus.ids[i], stage.passage(corpus, i)) for i in picks)))
    return out


def _renderer(runner: Runner, stage: LLMRerankStage) -> Renderer:
    """The tokenizer and context length the stage's backend would use; no weights loaded."""
    from transformers import AutoTokenizer

    folder = model_folder(stage.resolved_model(runner.ctx.base_dir), runner.store, runner.log)
    config = stage.backend_config()
    trust = bool(getattr(config, "trust_remote_code", False))
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust)
    length = backend_class(config.type).context_length(config, folder, tokenizer)
    return Renderer(tokenizer, length, config.chat)


def _runs_on(runner: Runner, stage: LLMRerankStage) -> str:
    config = stage.backend_config()
    where = backend_class(config.type).describe(config)
    return "; ".join(part for part in (where, runner.executor.describe()) if part)


def render_plan(plans: list[StagePlan]) -> str:
    """The plan as an aligned table."""
    generating = any(p.generated_tokens_range for p in plans)
    header = ["stage", "type", "method", "cached", "queries", "candidates", "LLM calls", "prompt tokens",
              *(["generated tokens"] if generating else []), "runs on"]
    rows = [header]
    for p in plans:
        calls = (f"{p.calls:,}" if p.calls is not None else
                 f"{p.calls_range[0]:,}–{p.calls_range[1]:,}" if p.calls_range else "-")
        tokens = ("-" if p.prompt_tokens is None else ("" if p.tokens_exact else "≈ ") + f"{p.prompt_tokens:,}")
        if p.prompt_tokens_range is not None:
            tokens = f"≈ {p.prompt_tokens_range[0]:,}–{p.prompt_tokens_range[1]:,}"
        generated = (f"0–{p.generated_tokens_range[1]:,}" if p.generated_tokens_range else "-")
        rows.append([p.stage, p.type, p.method or "-", "yes" if p.cached else "no",
                     "-" if p.queries is None else f"{p.queries:,}",
                     "-" if p.candidates is None else f"{p.candidates:,}", calls, tokens,
                     *([generated] if generating else []), p.runs_on or "-"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    notes = [f"  {p.stage}: {p.note}" for p in plans if p.note]
    return "\n".join(lines + (["notes:"] + notes if notes else [])) + "\n"

