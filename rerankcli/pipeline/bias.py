"""Order sensitivity of a rerank stage: the same stage shown its candidates in other orders.

Listwise, setwise, pairwise and tournament rerankers see candidates in some order, and models
favour what they see first. ``rerank bias`` reruns one stage of a pipeline with its candidates
reversed and shuffled (``order: reverse`` / ``order: shuffle`` with seeds 1..K: the same
``orders.presented`` that the stage itself and permutation self-consistency use), as ordinary
stages of a derived pipeline, so every variant is cached, resumable and batched across queries
like any stage. It then measures, per query and overall:

- Kendall's tau between the stage's own output and each variant's output (1: order does not
  matter; the top-``depth`` candidates only);
- nDCG@10 of each variant when the dataset has qrels, and its spread (max - min) per query;
- "position wins": among candidate pairs whose order in the output changes with the order shown,
  the share of outputs that keep the order the pair was shown in. 0.5 means the shown order
  does not decide them; 1.0 means every order-dependent decision follows the position.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np

from rerankcli.core.errors import UserError
from rerankcli.core.runs import Run, read_run
from rerankcli.evaluate.metrics import evaluate, parse_metric
from rerankcli.evaluate.overlap import kendall_tau
from rerankcli.pipeline.config import Pipeline
from rerankcli.rerank.llm_method import LLMRerankStage
from rerankcli.rerank.orders import presented

NDCG10 = parse_metric("ndcg@10")


@dataclass(frozen=True)
class Variant:
    """One way of showing the candidates: a copy of the stage under its own name."""

    label: str  # "as configured", "reverse", "shuffle-1", ...
    stage: LLMRerankStage


@dataclass
class QueryBias:
    qid: str
    tau_mean: float | None
    tau_min: float | None
    ndcg: dict[str, float] = field(default_factory=dict)  # variant label -> nDCG@10
    position_wins: float | None = None  # None: no pair changed order
    unstable_pairs: int = 0


@dataclass
class BiasReport:
    stage: str
    method: str
    depth: int
    variants: list[str]
    ndcg: dict[str, float]  # variant -> mean nDCG@10 (empty without qrels)
    tau: dict[str, float | None]  # variant -> mean tau against the stage as configured
    queries: list[QueryBias]
    position_wins: float | None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def variants(stage: LLMRerankStage, shuffles: int) -> list[Variant]:
    """The stage as configured, reversed, and ``shuffles`` seeded shuffles (no duplicates)."""
    made = [Variant("as configured", stage)]
    wanted = [("reverse", {"order": "reverse"})] + [
        (f"shuffle-{i}", {"order": "shuffle", "order_seed": i}) for i in range(1, shuffles + 1)]
    for label, update in wanted:
        copy = stage.model_copy(update={"name": f"{stage.name}.{label}", **update})
        if any(v.stage.order == copy.order and v.stage.shuffle_seed == copy.shuffle_seed for v in made):
            continue  # the configured stage already shows this order
        made.append(Variant(label, copy))
    return made


def bias_pipeline(pipeline: Pipeline, stage_name: str, shuffles: int) -> tuple[Pipeline, list[Variant]]:
    """A pipeline computing the stage's inputs and every variant of it, writing to
    ``<output>/bias-<stage>/``; and the variants."""
    by_name = {s.name: s for s in pipeline.stages}
    stage = by_name.get(stage_name)
    if stage is None:
        raise UserError(f"--stage: no stage named {stage_name!r} in {pipeline.source} "
                        f"(stages: {', '.join(by_name)})")
    if not isinstance(stage, LLMRerankStage):
        kind = f"{stage.type} stage" + (f" ({stage.method})" if getattr(stage, "method", None) else "")
        raise UserError(f"--stage {stage_name}: rerank bias reorders the candidates of an LLM rerank stage; "
                        f"'{stage_name}' is {'an' if kind[0] in 'aeiou' else 'a'} {kind}")
    if not stage.order_matters:
        raise UserError(f"--stage {stage_name}: {stage.method} scores each passage on its own, so the order "
                        "the candidates are shown in cannot change its output; rerank bias is for listwise, "
                        "setwise, pairwise, tournament and group methods")
    if shuffles < 0:
        raise UserError("--shuffles must be 0 or more")
    needed, todo = set(), list(pipeline.inputs[stage_name])
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo += pipeline.inputs[name]
    made = variants(stage, shuffles)
    stages = [s for s in pipeline.stages if s.name in needed] + [v.stage for v in made]
    inputs = {name: pipeline.inputs[name] for name in needed}
    inputs.update({v.stage.name: pipeline.inputs[stage_name] for v in made})
    derived = pipeline.model_copy(update={"stages": stages, "inputs": inputs,
                                          "output": pipeline.output / f"bias-{stage_name}"})
    return derived, made


def measure(made: list[Variant], runs: dict[str, Run], input_run: Run, depth: int,
            qrels: dict[str, dict[str, int]] | None) -> BiasReport:
    """Agreement between the variants' outputs (``runs`` by stage name) on each query."""
    base = made[0]
    outputs = {v.label: runs[v.stage.name] for v in made}
    per_label_ndcg: dict[str, dict[str, float]] = {}
    if qrels:
        for label, run in outputs.items():
            judged = Run({q: s for q, s in run.scores.items() if q in qrels})
            per_label_ndcg[label] = evaluate(judged, qrels, [NDCG10]).per_query[str(NDCG10)] if judged.qids else {}
    queries = []
    taus_of: dict[str, list[float]] = {v.label: [] for v in made}
    for qid in input_run.qids:
        candidates = [d for d, _ in input_run.ranked(qid)[:depth]]
        ranked = {label: [d for d, _ in run.ranked(qid)[: len(candidates)]] for label, run in outputs.items()}
        for v in made:
            t = kendall_tau(ranked[base.label], ranked[v.label])
            if t is not None:
                taus_of[v.label].append(t)
        taus = [t for t in (kendall_tau(ranked[base.label], ranked[v.label]) for v in made[1:]) if t is not None]
        wins, unstable = _position_wins(candidates, ranked, made, qid)
        queries.append(QueryBias(
            qid, float(np.mean(taus)) if taus else None, min(taus) if taus else None,
            {label: values[qid] for label, values in per_label_ndcg.items() if qid in values},
            wins, unstable))
    tau = {label: float(np.mean(values)) if values else None for label, values in taus_of.items()}
    ndcg = {label: float(np.mean(list(values.values()))) for label, values in per_label_ndcg.items() if values}
    follows = sum((q.position_wins or 0.0) * q.unstable_pairs * len(made) for q in queries)
    cases = sum(q.unstable_pairs * len(made) for q in queries)
    return BiasReport(base.stage.name, str(getattr(base.stage, "method", "")), depth, [v.label for v in made],
                      ndcg, tau, queries, follows / cases if cases else None)


def _position_wins(candidates: list[str], ranked: dict[str, list[str]], made: list[Variant],
                   qid: str) -> tuple[float | None, int]:
    """(share of outputs that keep a changing pair in the order shown, pairs that change)."""
    n = len(candidates)
    if n < 2:
        return None, 0
    index = {d: i for i, d in enumerate(candidates)}
    shown, placed = [], []
    for v in made:
        order = presented(n, v.stage.order, v.stage.shuffle_seed, qid)
        where = np.empty(n, dtype=np.int64)
        where[order] = np.arange(n)  # candidate i is shown at position where[i]
        shown.append(where)
        rank = np.full(n, n, dtype=np.int64)
        for r, d in enumerate(ranked[v.label]):
            if d in index:
                rank[index[d]] = r
        placed.append(rank)
    follows = cases = 0
    for a, b in combinations(range(n), 2):
        above = [p[a] < p[b] for p in placed]
        if all(above) or not any(above):
            continue
        cases += 1
        follows += sum((s[a] < s[b]) == up for s, up in zip(shown, above))
    return (follows / (cases * len(made)) if cases else None), cases


def render(report: BiasReport) -> str:
    """The report as two aligned tables: variants, then queries, then the overall line."""
    lines = [f"rerank bias: stage '{report.stage}' ({report.method}), {len(report.queries)} queries, "
             f"top {report.depth} candidates; orders: {', '.join(report.variants)}", ""]
    head = ["order", "tau vs configured"] + (["nDCG@10"] if report.ndcg else [])
    rows = [head] + [[label, _f(report.tau[label], 3)] + ([f"{report.ndcg[label]:.4f}"] if report.ndcg else [])
                     for label in report.variants]
    lines += _table(rows) + [""]
    head = ["qid", "tau mean", "tau min", "position wins", "changing pairs"] + (
        ["nDCG@10 min", "max", "spread"] if report.ndcg else [])
    rows = [head]
    for q in report.queries:
        row = [q.qid, _f(q.tau_mean, 3), _f(q.tau_min, 3), _f(q.position_wins, 3), str(q.unstable_pairs)]
        if report.ndcg:
            values = list(q.ndcg.values())
            row += [_f(min(values), 4), _f(max(values), 4), _f(max(values) - min(values), 4)] if values else ["-"] * 3
        rows.append(row)
    lines += _table(rows) + [""]
    taus = [q.tau_mean for q in report.queries if q.tau_mean is not None]
    spreads = [max(q.ndcg.values()) - min(q.ndcg.values()) for q in report.queries if q.ndcg]
    summary = f"overall: mean tau {_f(float(np.mean(taus)) if taus else None, 3)}"
    if spreads:
        summary += (f"; nDCG@10 spread per query mean {np.mean(spreads):.4f}, max {max(spreads):.4f}; "
                    f"spread of the means {max(report.ndcg.values()) - min(report.ndcg.values()):.4f}")
    summary += f"; position wins {_f(report.position_wins, 3)} (0.5: the order shown does not decide)"
    return "\n".join(lines + [summary]) + "\n"


def _f(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]



def run_bias(pipeline: Pipeline, stage_name: str, shuffles: int, cache_dir: Path | None = None,
             log: Callable[[str], None] | None = None, show_progress: bool = True) -> BiasReport:
    """Compute (or read from the cache) every variant of the stage and measure their agreement."""
    from rerankcli.pipeline.runner import Runner

    derived, made = bias_pipeline(pipeline, stage_name, shuffles)
    runner = Runner(derived, cache_dir, log=log, show_progress=show_progress)
    report = runner.run()
    keys = {r.name: r.key for r in report.stages}
    runs = {v.stage.name: read_run(runner.store.stage_dir(keys[v.stage.name]) / "run.trec") for v in made}
    source = derived.inputs[made[0].stage.name][0]
    input_run = read_run(runner.store.stage_dir(keys[source]) / "run.trec")
    qrels = runner.ctx.dataset.qrels() if runner.ctx.dataset.has("qrels") else None
    return measure(made, runs, input_run, made[0].stage.depth, qrels)
