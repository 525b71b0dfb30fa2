"""``type: evaluate``: metrics of the input runs, written to ``<output>/metrics.json``.

With ``baseline:`` (one of its inputs) the stage also compares every other input with it,
exactly as ``rerank compare`` does, and writes ``<stage>.comparison.md``, ``.json`` and a
``.png`` of the per-query differences next to ``metrics.json``.

With the dataset's qrels, documents the dataset excludes for a query (BRIGHT's
``excluded_ids``) are removed from every input run before its metrics are computed, as
BRIGHT's own scorer does; the manifest's details count them per run. Other datasets exclude
nothing, and their runs are evaluated as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from rerankcli.core.atomic import write_text
from rerankcli.core.errors import UserError
from rerankcli.core.formats import read_qrels
from rerankcli.core.hashing import file_digest
from rerankcli.core.runs import Run
from rerankcli.core.stage import Context, StageConfig, StageOutput, resolve_existing
from rerankcli.core.versions import versions
from rerankcli.evaluate.compare import Comparison, compare
from rerankcli.evaluate.metrics import Evaluation, evaluate, parse_metric


class EvaluateStage(StageConfig):
    """Evaluate one or more runs with the dataset's qrels (or ``qrels:``, a file of its own)."""

    type: Literal["evaluate"] = Field(description="evaluate: score runs against relevance judgements")
    metrics: list[str] = Field(default_factory=lambda: ["ndcg@10", "mrr@10", "recall@100", "map"], description=(
        "measures as trec_eval computes them: ndcg[@k], mrr[@k], recall[@k], map[@k], p@k, rprec"))
    relevance_level: int = Field(1, description="judgement >= this is relevant (binary metrics)")
    missing: Literal["skip", "zero"] = Field("skip", description=(
        "judged queries missing from a run: skip them, or count them as 0 (trec_eval -c)"))
    qrels: Path | None = Field(None, description="a qrels file of its own (default: the dataset's qrels)")
    baseline: str | None = Field(None, description="compare the other inputs with this one")
    test: Literal["student", "fisher", "permutation"] = Field("student", description=(
        "baseline: paired t-test (student) or Fisher's randomisation test (fisher, alias permutation)"))
    correction: Literal["holm", "bonferroni", "none"] = Field("holm", description=(
        "baseline: multiple-comparison correction of the p-values"))
    alpha: float = Field(0.05, gt=0.0, lt=1.0, description="baseline: significance level")
    permutations: int = Field(10_000, ge=1, description="randomisation test: sign assignments sampled")
    seed: int = Field(0, description="randomisation test: random seed of the sampled assignments")

    reads: ClassVar = "many"
    produces: ClassVar = "metrics"
    needs: ClassVar = frozenset({"qrels"})
    summary: ClassVar = "trec_eval metrics of the input runs, and significance tests against a baseline"

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("list at least one metric")
        try:
            names = [str(parse_metric(m)) for m in value]
        except UserError as exc:
            raise ValueError(str(exc)) from None
        for position, name in enumerate(names):  # one key per metric in metrics.json and the table
            if name in names[:position]:
                spellings = (value[names.index(name)], value[position])
                same = f" ({spellings[0]!r} and {spellings[1]!r} are one metric)" if len(set(spellings)) > 1 else ""
                raise ValueError(f"metric {name} is listed twice{same}")
        return names

    @field_validator("qrels")
    @classmethod
    def _exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else resolve_existing(value, info, "qrels file")

    @model_validator(mode="after")
    def _baseline_is_an_input(self) -> EvaluateStage:
        if self.baseline is not None:
            named = self.input_names() or []
            if self.baseline not in named:
                raise ValueError(f"baseline {self.baseline!r} must be one of the stage's 'inputs' "
                                 f"({', '.join(named) or 'none listed'})")
            if len(named) < 2:
                raise ValueError("a baseline needs at least one other run in 'inputs' to compare with it")
        return self

    def dataset_parts(self) -> frozenset[str]:
        return frozenset() if self.qrels is not None else self.needs

    def check_inputs(self, ctx: Context) -> None:
        """Read the qrels; refuse, before any stage computes, qrels that judge none of the queries.

        The dataset's own qrels judge only queries of the dataset (``Dataset.queries`` checks);
        a stage's ``qrels:`` file may not, and then no run of this pipeline has a judged query.
        """
        if self.qrels is None:
            super().check_inputs(ctx)
            return
        qrels = read_qrels(self.qrels)
        if ctx.dataset.has("queries") and not set(qrels) & set(ctx.dataset.all_queries()):
            queries = ctx.dataset.source("queries")
            raise UserError(f"stage '{self.name}': field 'qrels': {self.qrels} judges none of the queries of "
                            f"{queries}; no run of this pipeline could be evaluated")

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "qrels": None}

    def fingerprint(self, ctx: Context) -> dict[str, Any]:
        qrels = file_digest(self.qrels) if self.qrels else ctx.dataset.fingerprint("qrels")
        return {"qrels": qrels, "versions": versions("numpy")}

    def execute(self, ctx: Context, inputs: list[Run]) -> StageOutput:
        qrels = read_qrels(self.qrels) if self.qrels else ctx.dataset.qrels()
        excluded = {} if self.qrels else ctx.dataset.excluded()  # they belong to the dataset's judgements
        metrics = [parse_metric(m) for m in self.metrics]
        results = []
        dropped = []
        names = [f"run '{name}'" for name in self.input_names() or []] or ["its input run"]
        for name, run in zip(names, inputs):
            if not set(run.scores) & set(qrels):  # as `rerank eval` refuses it: a wrong qrels file, not 0.0
                source = self.qrels or ctx.dataset.source("qrels")
                raise UserError(f"stage '{self.name}': no query of {name} is judged in {source}; "
                                "nothing to evaluate")
            if excluded:
                run, count = without_excluded(run, excluded)
                dropped.append(count)
            result = evaluate(run, qrels, metrics, self.relevance_level, self.missing)
            results.append({
                "means": result.means,
                "per_query": result.per_query,
                "queries": result.queries,
                "unjudged_queries": len(result.run_only),
                "queries_missing_from_run": len(result.qrels_only),
            })
        details: dict[str, Any] = {"runs": len(inputs)}
        if excluded:  # one count per input run, in the order of the manifest's input_stages
            details["excluded_ids_dropped"] = dropped
        return StageOutput(metrics={"runs": results}, details=details)

    def comparison(self, names: list[str], results: list[dict[str, Any]]) -> Comparison | None:
        """The comparison with the baseline, from the stage's stored per-query values."""
        if self.baseline is None:
            return None
        evaluations = {name: Evaluation(per_query=r["per_query"], means=r["means"], queries=r["queries"])
                       for name, r in zip(names, results)}
        return compare(evaluations, self.baseline, self.test, self.correction, self.alpha,
                       self.permutations, self.seed)

    def report_files(self, out: Path) -> list[Path]:
        """The files ``write_reports`` writes into the output folder."""
        if self.baseline is None:
            return []
        return [out / f"{self.name}.comparison.{suffix}" for suffix in ("md", "json", "png")]

    def write_reports(self, comparison: Comparison, out: Path) -> list[Path]:
        """Write the comparison as markdown, JSON and the per-query difference plot."""
        import json

        from rerankcli.evaluate.plot import plot_differences
        from rerankcli.evaluate.report import comparison_json, render_comparison

        markdown, data, png = self.report_files(out)
        write_text(markdown, render_comparison(comparison, "markdown"))
        write_text(data, json.dumps(comparison_json(comparison), indent=2) + "\n")
        plot_differences(comparison, png)
        return [markdown, data, png]


def without_excluded(run: Run, excluded: dict[str, frozenset[str]]) -> tuple[Run, int]:
    """``run`` less each query's excluded documents (a new run: the input is shared), and how many went.

    The documents after a removed one move up, as they do when BRIGHT removes excluded ids
    before ranking; a query whose every document is excluded stays, with none.
    """
    kept: dict[str, dict[str, float]] = {}
    count = 0
    for qid, docs in run.scores.items():
        drop = excluded.get(qid)
        if drop and not drop.isdisjoint(docs):
            kept[qid] = {doc: score for doc, score in docs.items() if doc not in drop}
            count += len(docs) - len(kept[qid])
        else:
            kept[qid] = docs
    return Run(kept), count
