"""Run a validated pipeline: key every stage, reuse cached outputs, compute the rest.

A stage's key hashes its identity (config minus names), its inputs' keys and its fingerprint
(data, model and library versions). All keys are computed before any stage runs, so a missing
model or data file stops the job before compute is spent. Each stage's output is published to
the store atomically, then copied (atomically) to ``<output>/<stage>.trec`` with a manifest.

LLM rerank stages compute query by query: each finished query is journaled under the stage
key, so a killed run resumes where it stopped. With ``--shard i/N`` they compute only their
shard's queries and write shard results to ``<output>/shards/``; the stages after them that
need every query (evaluate, fusion) wait for ``rerank merge``, which joins the shards.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rerankcli import __version__
from rerankcli.core import faults
from rerankcli.core.atomic import copy_file, write_bytes, write_text
from rerankcli.core.dataset import Dataset
from rerankcli.core.errors import Interrupted, UserError
from rerankcli.core.hashing import save_memo
from rerankcli.core.library_output import terminal
from rerankcli.core.runs import Run, read_run, write_run
from rerankcli.core.stage import Context, StageConfig, StageOutput
from rerankcli.core.store import Store, check_cache_folder, default_cache_dir
from rerankcli.execution.executor import execute
from rerankcli.execution.executor_config import ExecutorConfig
from rerankcli.execution.journal import Journal, header
from rerankcli.execution.shard import (Shard, candidate_ids, check_placement, matching_shards, shard_folder,
                                       stage_journal)
from rerankcli.llm.registry import OpenBackends
from rerankcli.pipeline.config import Pipeline
from rerankcli.pipeline.outputs import check_outputs_do_not_overwrite_inputs, export

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
    """Runs a pipeline; ``shard`` computes one share of the queries, ``merge_only`` joins shards."""

    def __init__(self, pipeline: Pipeline, cache_dir: Path | None = None,
                 force: set[str] | None = None, log=None, show_progress: bool = True,
                 shard: Shard | None = None, merge_only: bool = False,
                 executor: ExecutorConfig | None = None) -> None:
        self.pipeline = pipeline
        root = cache_dir or pipeline.cache or default_cache_dir()
        check_cache_folder(root)
        self.store = Store(root, warn=lambda message: print(message, file=terminal(), flush=True))  # shown even with -q
        self.force = force or set()
        unknown = self.force - {"*"} - {s.name for s in pipeline.stages}
        if unknown:
            raise UserError(f"--force: no stage named {sorted(unknown)[0]!r} in {pipeline.source}")
        self.log = log or _stderr
        self.shard, self.merge_only = shard, merge_only
        if merge_only and not any(s.per_query for s in pipeline.stages):
            raise UserError(f"rerank merge: {pipeline.source} has no LLM rerank stage, so it has no shards to "
                            "merge; use `rerank run`")
        if shard is not None and not any(s.per_query for s in pipeline.stages):
            raise UserError(f"--shard {shard.label}: {pipeline.source} has no LLM rerank stage to share out "
                            "(shards split the queries of LLM rerank stages)")
        self.ctx = Context(Dataset(pipeline.dataset), self.store, pipeline.source.resolve().parent,
                           self.log, show_progress)
        self.executor = executor or pipeline.executor
        self.backends = OpenBackends()  # models loaded by this run's stages, shared between them
        self._runs: dict[str, Run] = {}
        self._shard_runs: dict[str, Run] = {}  # stage name -> this shard's run (shard mode)
        self._finished: list[str] = []  # stages whose outputs are complete (for an interrupt's line)
        self._current: str | None = None
        self._journal: Journal | None = None

    def plan(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Key and fingerprint of every stage, in order; raises before any compute."""
        keys: dict[str, tuple[str, dict[str, Any]]] = {}
        for stage in self.pipeline.stages:
            try:
                fingerprint = stage.fingerprint(self.ctx)
            except UserError as exc:  # a missing model or prompt: say which stage asked for it
                if f"stage '{stage.name}'" in str(exc):
                    raise
                raise UserError(f"{self.pipeline.source}: stage '{stage.name}': {exc}") from None
            inputs = [keys[name][0] for name in self.pipeline.inputs[stage.name]]
            keys[stage.name] = (stage_key(stage, inputs, fingerprint), fingerprint)
        check_outputs_do_not_overwrite_inputs(self.pipeline)
        return keys

    def cached(self, key: str) -> bool:
        return self.store.has_stage(key)

    def _forced(self, stage: StageConfig) -> bool:
        return "*" in self.force or stage.name in self.force

    def check_inputs(self, keys: dict[str, tuple[str, dict[str, Any]]]) -> None:
        """Read the data files of every stage that will compute, before the first one runs.

        So a malformed qrels file stops the job before retrieval is computed and cached, and a
        job that fails on bad input leaves the output and cache folders as they were.
        """
        for stage in self.pipeline.stages:
            if self._forced(stage) or not self.store.has_stage(keys[stage.name][0]):
                stage.check_inputs(self.ctx)

    def run(self) -> PipelineReport:
        try:
            return self._run()
        except (KeyboardInterrupt, Interrupted) as exc:  # SIGINT, or SIGTERM (Interrupted, from the CLI)
            raise Interrupted(getattr(exc, "signal_name", "SIGINT"), self._saved()) from None
        finally:
            self.backends.close()  # release models and vLLM engines

    def _saved(self) -> str:
        """What an interrupted run leaves for the next one: stages cached, queries journaled."""
        parts = []
        if self._finished:
            parts.append(f"stages done and cached: {', '.join(self._finished)}")
        if self._journal is not None and self._journal.results:
            parts.append(f"stage '{self._current}': {len(self._journal.results)} queries journaled")
        if not parts:
            return "nothing was saved; no file was half-written"
        return "; ".join(parts) + "; rerun the same command to resume from there"

    def _run(self) -> PipelineReport:
        keys = self.plan()
        self.check_inputs(keys)
        reports = []
        metrics: dict[str, dict[str, float]] = {}
        waiting: set[str] = set()  # shard mode: stages that need every query
        for stage in self.pipeline.stages:
            key, fingerprint = keys[stage.name]
            inputs = self.pipeline.inputs[stage.name]
            started = time.monotonic()
            self._current = stage.name
            faults.point(f"stage-start:{stage.name}")
            if self.shard is not None and (waiting & set(inputs) or
                                           (set(self._shard_runs) & set(inputs) and not stage.per_query)):
                self.log(f"[{stage.name}] waits for `rerank merge` (it needs every query)")
                waiting.add(stage.name)
                continue
            if self.shard is not None and stage.per_query:
                with self.store.lock(f"{key}.{self.shard.index}-of-{self.shard.count}", lambda: self.log(
                        f"[{stage.name}] waiting: another process is computing shard {self.shard.label}")):
                    outputs = self._run_shard(stage, key, fingerprint, inputs, keys)
                reports.append(StageReport(stage.name, key, False, time.monotonic() - started, outputs))
                self._finished.append(stage.name)
                faults.point(f"stage-end:{stage.name}")
                continue
            forced = self._forced(stage)
            cached = not forced and self.store.has_stage(key)
            if not cached:
                with self.store.lock(key, lambda: self.log(
                        f"[{stage.name}] waiting: another process is computing it ({key[:12]})")):
                    cached = not forced and self.store.has_stage(key)  # it may have finished meanwhile
                    if not cached:
                        self.log(f"[{stage.name}] running ({key[:12]})")
                        self._compute(stage, key, fingerprint, {n: keys[n][0] for n in inputs}, forced)
            if cached:
                self.log(f"[{stage.name}] cached ({key[:12]})")
                self.store.journal_path(key).unlink(missing_ok=True)  # left by a kill after publishing
            outputs = export(stage, self.store.stage_dir(key), self.pipeline, inputs, metrics, self.log)
            wall = time.monotonic() - started
            if not cached:
                self.log(f"[{stage.name}] done in {wall:.1f}s")
            reports.append(StageReport(stage.name, key, cached, wall, outputs))
            self._finished.append(stage.name)
            faults.point(f"stage-end:{stage.name}")
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
        journal = None
        if stage.per_query:
            run = self._input_run(next(iter(input_keys.values())))
            depth = getattr(stage, "depth", None)  # shards must score exactly these candidates
            journal = stage_journal(self.store, self.pipeline.output, stage.name, key, forced, self.merge_only,
                                    run.qids, self.log,
                                    candidates=candidate_ids(run, depth) if depth is not None else None)
            self._journal = journal
        output, started_at, wall = self._execute(stage, [self._input_run(k) for k in input_keys.values()], journal)
        with self.store.building() as staging:  # a fault or an interrupt: no half-built entry stays behind
            if journal is not None:  # how every query was computed (which process, which attempt)
                copy_file(journal.path, staging / "queries.jsonl")
            self._write_entry(stage, key, fingerprint, input_keys, output, staging, started_at, wall)
            final = self.store.stage_dir(key)
            (self.store.replace if forced else self.store.publish)(staging, final)
        if journal is not None:
            journal.remove()
        self._journal = None

    def _execute(self, stage: StageConfig, runs: list[Run], journal: Journal | None
                 ) -> tuple[StageOutput, str, float]:
        """The stage's output, when it started (UTC) and how long it took."""
        started_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        clock = time.monotonic()
        output = execute(stage, self.ctx, runs, journal, self.executor, self.backends)
        return output, started_at, time.monotonic() - clock

    def _write_entry(self, stage: StageConfig, key: str, fingerprint: dict[str, Any], input_keys: dict[str, str],
                     output: StageOutput, staging: Path, started_at: str, wall: float) -> None:
        counts: dict[str, int] = {}
        if stage.produces == "run":
            assert output.run is not None, f"stage {stage.name} produced no run"
            write_run(output.run, staging / "run.trec", tag=stage.name)
            counts = {"queries": len(output.run.scores), "pairs": len(output.run)}
            self._runs[key] = output.run
        else:
            write_text(staging / "metrics.json", json.dumps(output.metrics) + "\n")
        for name, content in sorted(output.files.items()):
            write_bytes(staging / name, content)
        manifest = {
            "stage": stage.name, "type": stage.type, "key": key,
            "config": stage.model_dump(mode="json"), "inputs": input_keys,
            "fingerprint": fingerprint, "rerankcli": __version__,
            "started_at": started_at, "wall_s": round(wall, 3), "counts": counts,
            "details": output.details,
        }
        if output.files:
            manifest["files"] = sorted(output.files)
        write_text(staging / "manifest.json", json.dumps(manifest, indent=2, default=str) + "\n")

    def _run_shard(self, stage: StageConfig, key: str, fingerprint: dict[str, Any], inputs: list[str],
                   keys: dict[str, tuple[str, dict[str, Any]]]) -> list[Path]:
        """Compute this shard's queries of a per-query stage; write its results and run to shards/."""
        assert self.shard is not None
        forced = self._forced(stage)
        if self.store.has_stage(key) and not forced:  # the whole stage is done: take this shard's part
            run = self._input_run(key)
            self._shard_runs[stage.name] = Run({q: d for q, d in run.scores.items() if self.shard.selects(q)})
            self.log(f"[{stage.name}] cached ({key[:12]}); nothing to do for shard {self.shard.label}")
            return []
        folder = shard_folder(self.pipeline.output)
        result_file = self.shard.file(folder, stage.name)
        path = self.store.journal_path(key, self.shard)
        if forced:
            path.unlink(missing_ok=True)
        runs = []
        for name in inputs:
            run = self._shard_runs.get(name) or self._input_run(keys[name][0])
            runs.append(Run({q: docs for q, docs in run.scores.items() if self.shard.selects(q)}))
        depth = getattr(stage, "depth", None)  # the journal and shard file must score exactly these
        candidates = candidate_ids(runs[0], depth) if depth is not None else None
        journal = Journal(path, header(stage.name, key, self.shard.label), candidates, warn=self.store.warn)
        matching, _ = matching_shards(self.pipeline.output, stage.name, key)
        if self.shard in matching and not forced:
            check_placement(matching[self.shard], self.shard, stage.name, candidates)
            journal.seed(matching[self.shard].prepared, matching[self.shard].results)
            self.log(f"[{stage.name}] shard {self.shard.label} already done ({key[:12]})")
        else:
            self.log(f"[{stage.name}] running shard {self.shard.label} ({key[:12]})")
        self._journal = journal
        output, started_at, wall = self._execute(stage, runs, journal)
        assert output.run is not None
        self._shard_runs[stage.name] = output.run
        copy_file(journal.path, result_file)
        staging = self.store.staging()
        try:
            self._write_entry(stage, key, fingerprint, {n: keys[n][0] for n in inputs}, output, staging,
                              started_at, wall)
            stem = result_file.name.removesuffix(".jsonl")
            copy_file(staging / "run.trec", folder / f"{stem}.trec")
            manifest = json.loads((staging / "manifest.json").read_text(encoding="utf-8"))
            manifest["shard"] = self.shard.label
            write_text(folder / f"{stem}.manifest.json", json.dumps(manifest, indent=2) + "\n")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        journal.remove()
        self._journal = None
        return [result_file, folder / f"{stem}.trec"]
