"""Run a validated pipeline: key every stage, reuse cached outputs, compute the rest.

A stage's key hashes its identity (config minus names), its inputs' keys and its fingerprint
(data, model and library versions). All keys are computed before any stage runs, so a missing
model or data file stops the job before compute is spent. Each stage's output is published to
the store atomically, then copied (atomically) to ``<output>/<stage>.trec`` with a manifest.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rerankcli import __version__
from rerankcli.atomic import copy_file, write_text
from rerankcli.config import Pipeline
from rerankcli.data.dataset import Dataset
from rerankcli.errors import UserError
from rerankcli.evaluate.compare import Comparison
from rerankcli.evaluate.stage import EvaluateStage
from rerankcli.hashing import save_memo
from rerankcli.runs import Run, read_run, write_run
from rerankcli.stage import Context, StageConfig
from rerankcli.store import Store, default_cache_dir

KEY_FORMAT = 1  # bump when the meaning of a stage key changes


def stage_key(stage: StageConfig, input_keys: list[str], fingerprint: dict[str, Any]) -> str:
    material = {"format": KEY_FORMAT, "stage": stage.identity(), "inputs": input_keys,
                "fingerprint": fingerprint}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


@dataclass
class StageReport:
    name: str
    key: str
    cached: bool
    wall_s: float
    outputs: list[Path] = field(default_factory=list)


@dataclass
class PipelineReport:
    stages: list[StageReport]
    metrics: dict[str, dict[str, float]]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Runner:
    def __init__(self, pipeline: Pipeline, cache_dir: Path | None = None,
                 force: set[str] | None = None, log=None, show_progress: bool = True) -> None:
        self.pipeline = pipeline
        self.store = Store(cache_dir or pipeline.cache or default_cache_dir())
        self.force = force or set()
        unknown = self.force - {"*"} - {s.name for s in pipeline.stages}
        if unknown:
            raise UserError(f"--force: no stage named {sorted(unknown)[0]!r} in {pipeline.source}")
        self.log = log or _stderr
        self.ctx = Context(Dataset(pipeline.dataset), self.store, pipeline.source.resolve().parent,
                           self.log, show_progress)
        self._runs: dict[str, Run] = {}

    def plan(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Key and fingerprint of every stage, in order; raises before any compute."""
        keys: dict[str, tuple[str, dict[str, Any]]] = {}
        for stage in self.pipeline.stages:
            fingerprint = stage.fingerprint(self.ctx)
            inputs = [keys[name][0] for name in self.pipeline.inputs[stage.name]]
            keys[stage.name] = (stage_key(stage, inputs, fingerprint), fingerprint)
        self._check_outputs_do_not_overwrite_inputs()
        return keys

    def cached(self, key: str) -> bool:
        return self.store.has_stage(key)

    def run(self) -> PipelineReport:
        try:
            return self._run()
        finally:
            if "rerankcli.llm.registry" in sys.modules:  # release models and vLLM engines
                sys.modules["rerankcli.llm.registry"].close_backends()

    def _run(self) -> PipelineReport:
        keys = self.plan()
        reports = []
        metrics: dict[str, dict[str, float]] = {}
        for stage in self.pipeline.stages:
            key, fingerprint = keys[stage.name]
            inputs = self.pipeline.inputs[stage.name]
            forced = "*" in self.force or stage.name in self.force
            started = time.monotonic()
            if self.store.has_stage(key) and not forced:
                self.log(f"[{stage.name}] cached ({key[:12]})")
                cached = True
            else:
                self.log(f"[{stage.name}] running ({key[:12]})")
                self._compute(stage, key, fingerprint, {n: keys[n][0] for n in inputs}, forced)
                cached = False
            outputs = self._export(stage, key, inputs, metrics)
            wall = time.monotonic() - started
            if not cached:
                self.log(f"[{stage.name}] done in {wall:.1f}s")
            reports.append(StageReport(stage.name, key, cached, wall, outputs))
        if metrics:
            write_text(self.pipeline.output / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        save_memo()
        return PipelineReport(reports, metrics)

    def _input_run(self, key: str) -> Run:
        if key not in self._runs:
            self._runs[key] = read_run(self.store.stage_dir(key) / "run.trec")
        return self._runs[key]

    def _compute(self, stage: StageConfig, key: str, fingerprint: dict[str, Any],
                 input_keys: dict[str, str], forced: bool) -> None:
        started_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        clock = time.monotonic()
        output = stage.execute(self.ctx, [self._input_run(k) for k in input_keys.values()])
        wall = time.monotonic() - clock
        staging = self.store.staging()
        counts: dict[str, int] = {}
        if stage.produces == "run":
            assert output.run is not None, f"stage {stage.name} produced no run"
            write_run(output.run, staging / "run.trec", tag=stage.name)
            counts = {"queries": len(output.run.scores), "pairs": len(output.run)}
            self._runs[key] = output.run
        else:
            write_text(staging / "metrics.json", json.dumps(output.metrics) + "\n")
        manifest = {
            "stage": stage.name, "type": stage.type, "key": key,
            "config": stage.model_dump(mode="json"), "inputs": input_keys,
            "fingerprint": fingerprint, "rerankcli": __version__,
            "started_at": started_at, "wall_s": round(wall, 3), "counts": counts,
            "details": output.details,
        }
        write_text(staging / "manifest.json", json.dumps(manifest, indent=2, default=str) + "\n")
        final = self.store.stage_dir(key)
        (self.store.replace if forced else self.store.publish)(staging, final)

    def _export(self, stage: StageConfig, key: str, inputs: list[str],
                metrics: dict[str, dict[str, float]]) -> list[Path]:
        """Copy the stage's cached output into the pipeline's output folder."""
        source = self.store.stage_dir(key)
        out = self.pipeline.output
        manifest = json.loads((source / "manifest.json").read_text(encoding="utf-8"))
        manifest.update({"stage": stage.name, "pipeline": str(self.pipeline.source),
                         "input_stages": inputs})
        manifest_path = out / f"{stage.name}.manifest.json"
        written = [manifest_path]
        if stage.produces == "run":
            copy_file(source / "run.trec", out / f"{stage.name}.trec")
            written.insert(0, out / f"{stage.name}.trec")
        else:
            results = json.loads((source / "metrics.json").read_text(encoding="utf-8"))["runs"]
            for name, result in zip(inputs, results):
                metrics.setdefault(name, {}).update(result["means"])
            comparison = stage.comparison(inputs, results) if isinstance(stage, EvaluateStage) else None
            self._show_metrics(stage, inputs, results, comparison)
            if comparison is not None:
                written += stage.write_reports(comparison, out)
        write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
        return written

    def _show_metrics(self, stage: StageConfig, inputs: list[str], results: list[dict],
                      comparison: Comparison | None = None) -> None:
        from rerankcli.evaluate.report import render, render_comparison

        rows = {name: result["means"] for name, result in zip(inputs, results)}
        self.log(f"[{stage.name}] {results[0]['queries']} queries evaluated")
        if comparison is None:
            print(render(rows, "table"), end="", flush=True)
        else:
            print(render_comparison(comparison, "table"), end="", flush=True)
            for note in comparison.notes():
                self.log(f"[{stage.name}] note: {note}")
        for name, result in zip(inputs, results):
            if result["queries_missing_from_run"]:
                self.log(f"[{stage.name}] note: {result['queries_missing_from_run']} judged queries "
                         f"have no results in '{name}' (skipped; missing: zero counts them as 0)")

    def _check_outputs_do_not_overwrite_inputs(self) -> None:
        out = self.pipeline.output
        planned = {out / "metrics.json"}
        for stage in self.pipeline.stages:
            planned |= {out / f"{stage.name}.trec", out / f"{stage.name}.manifest.json"}
            if isinstance(stage, EvaluateStage):
                planned |= set(stage.report_files(out))
        sources = [getattr(self.pipeline.dataset, p) for p in ("corpus", "queries", "qrels")]
        sources += [getattr(s, "run", None) for s in self.pipeline.stages]
        sources += [getattr(s, "qrels", None) for s in self.pipeline.stages]
        for source in sources:
            if isinstance(source, Path) and source.resolve() in {p.resolve() for p in planned}:
                raise UserError(f"{self.pipeline.source}: output would overwrite the input file {source}")
