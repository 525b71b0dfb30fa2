"""``type: load``: start a pipeline from an existing TREC run file (any system's output)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from rerankcli.core.dataset import first_line_of
from rerankcli.core.errors import UserError, shown, where
from rerankcli.core.hashing import file_digest
from rerankcli.core.runs import Run, read_run
from rerankcli.core.stage import Context, StageConfig, StageOutput, resolve_existing


class LoadStage(StageConfig):
    """Read a run file; optionally keep its top ``k`` per query."""

    type: Literal["load"] = Field(description="load: start from an existing TREC run file")
    run: Path = Field(description="the TREC run file, relative to the pipeline file")
    k: int | None = Field(None, description="keep the top k documents per query (default: all)")

    reads: ClassVar = "none"
    summary: ClassVar = "start from an existing TREC run file (any system's output)"

    @field_validator("run")
    @classmethod
    def _exists(cls, value: Path, info: ValidationInfo) -> Path:
        return resolve_existing(value, info, "run file")

    @field_validator("k")
    @classmethod
    def _positive(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError("k must be at least 1")
        return value

    def identity(self) -> dict[str, Any]:
        return {"type": "load", "k": self.k}  # the file's content, not its path, is the identity

    def fingerprint(self, ctx: Context) -> dict[str, Any]:
        return {"run": file_digest(self.run)}

    def check_inputs(self, ctx: Context) -> None:
        self._read(ctx)

    def _read(self, ctx: Context) -> Run:
        """The run file, read once per process (``check_inputs`` reads it before any stage runs)."""
        run = _read_run_once(self.run, file_digest(self.run))
        if ctx.dataset.has("queries"):
            check_queries_known(run, set(ctx.dataset.all_queries()), self.run)
        return run

    def execute(self, ctx: Context, inputs: list[Run]) -> StageOutput:
        run = self._read(ctx)
        if self.k is not None:
            run = run.top(self.k)
        return StageOutput(run=run, details={"source": str(self.run)})


@functools.lru_cache(maxsize=4)
def _read_run_once(path: Path, digest: str) -> Run:
    return read_run(path)


def check_queries_known(run: Run, known: set[str], path: Path) -> None:
    """Stop on the first run line whose query is not in the dataset's queries."""
    unknown = set(run.scores) - known
    if unknown:
        number, qid = first_line_of(path, unknown)
        raise UserError(f"{where(path, number)}: query {shown(qid)} is not in the dataset's queries")
