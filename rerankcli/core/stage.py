"""What every pipeline stage is: a pydantic config that knows how to fingerprint and run itself.

A stage's config is its contract: the YAML mapping is validated into the stage's own model
before anything runs. The pipeline hashes ``identity()`` (the config without names), the keys
of the input stages and ``fingerprint()`` (data files, models and library versions) into the
stage key under which its output is cached.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from rerankcli.core.runs import Run
from rerankcli.core.user_files import file_problem

if TYPE_CHECKING:
    from rerankcli.core.dataset import Dataset
    from rerankcli.core.store import Store

STAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def file_name(value: str, what: str) -> str:
    """Check that ``value`` can name a file or folder safely (no separators, no '..')."""
    if not STAGE_NAME.match(value):
        raise ValueError(f"{what} names are letters, digits, '_', '.' and '-' (they name files)")
    return value


def resolve_existing(value: Path, info: ValidationInfo, what: str) -> Path:
    """Make a path absolute against the pipeline's folder and require the file to exist."""
    base = (info.context or {}).get("base_dir", Path.cwd())
    path = Path(base) / value
    problem = file_problem(path, what.removesuffix(" file"))  # a FIFO, device, folder, link loop
    if problem is not None:
        raise ValueError(problem)
    return path.resolve()


@dataclass
class Context:
    """What a running stage may use: the dataset, the store for artefacts, a logger.

    Where a per-query stage computes (journal, executor, open models) is the execution
    layer's business, not the stage's: it is not in here.
    """

    dataset: Dataset
    store: Store
    base_dir: Path
    log: Callable[[str], None] = print
    show_progress: bool = True


@dataclass
class StageOutput:
    """A stage's result: a run (most stages) or metrics (evaluate), and manifest details."""

    run: Run | None = None
    metrics: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    #: more files of the stage's cache entry, copied beside its run as ``<stage>.<name>``
    #: (a reasoning stage's ``traces.jsonl.gz``)
    files: dict[str, bytes] = field(default_factory=dict)


class StageConfig(BaseModel):
    """Fields shared by every stage; subclasses add their parameters and behaviour."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description=(
        "the stage's name: names its output files; later stages' input/inputs refer to it"))
    type: str = Field(description="the kind of stage: retrieve, rerank, fuse, load, evaluate")
    input: str | None = Field(None, description=(
        "the earlier stage whose run this one reads (default: the last one before it that makes a run)"))
    inputs: list[str] | None = Field(None, description=(
        "the earlier stages whose runs this one reads (fuse, evaluate)"))

    #: one line for ``rerank methods``
    summary: ClassVar[str] = ""
    #: how many input runs the stage reads: "none" (retrieve, load), "one", or "many"
    reads: ClassVar[Literal["none", "one", "many"]] = "one"
    #: what the stage writes: a TREC run, or metrics (evaluate)
    produces: ClassVar[Literal["run", "metrics"]] = "run"
    #: which parts of the dataset the stage needs: subset of {"corpus", "queries", "qrels"}
    needs: ClassVar[frozenset[str]] = frozenset()
    #: whether the stage computes query by query through the execution layer (journaled, so it
    #: resumes, shards and runs on Ray) instead of in ``execute``
    per_query: ClassVar[bool] = False

    @field_validator("name")
    @classmethod
    def _name_is_a_file_name(cls, value: str) -> str:
        return file_name(value, "stage")

    @model_validator(mode="after")
    def _input_or_inputs(self) -> StageConfig:
        if self.input is not None and self.inputs is not None:
            raise ValueError("give either 'input' or 'inputs', not both")
        if self.reads == "none" and (self.input is not None or self.inputs):
            raise ValueError(f"a '{self.type}' stage reads no input run")
        if self.reads == "one" and self.inputs is not None and len(self.inputs) != 1:
            raise ValueError(f"a '{self.type}' stage reads exactly one input run; use 'input'")
        return self

    def input_names(self) -> list[str] | None:
        """The stages named as inputs, or None to read the previous stage."""
        if self.input is not None:
            return [self.input]
        return list(self.inputs) if self.inputs is not None else None

    def dataset_parts(self) -> frozenset[str]:
        """The dataset parts this configured stage reads (``needs``, less what it brings itself)."""
        return self.needs

    def check_inputs(self, ctx: Context) -> None:
        """Read the data files this stage will read, before any stage of the job runs.

        A malformed corpus, queries or qrels file then stops the job with nothing written,
        instead of after earlier stages were computed and published. The dataset keeps what
        it read, so the stage does not read it twice.
        """
        for part in sorted(self.dataset_parts()):
            ctx.dataset.load(part)

    def prepare(self, ctx: Context) -> str | None:
        """Build what this stage reuses between runs (an index, embeddings), if anything.

        Returns one line saying what was built or found, or None for stages with nothing to
        prepare. ``rerank index`` calls this; ``execute`` builds the same thing on demand.
        """
        return None

    def identity(self) -> dict[str, Any]:
        """The config that determines the output: everything but names and wiring."""
        return self.model_dump(mode="json", exclude={"name", "input", "inputs"})

    def fingerprint(self, ctx: Context) -> dict[str, Any]:
        """Data, models and versions that determine the output besides the config."""
        return {}

    def execute(self, ctx: Context, inputs: list[Run]) -> StageOutput:
        raise NotImplementedError
