"""``executor:``: where per-query stages compute (here, or on Ray actors). Never in a stage key."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ExecutorConfig(BaseModel):
    """``executor:`` at the top of a pipeline, or ``--executor`` on the command line."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["local", "ray"] = "local"
    address: str | None = Field(None, description=(
        "ray: the cluster to join ('auto', 'ray://head:10001'); none starts a local Ray instance"))
    workers: int = Field(1, ge=1, description="ray: actors, each holding one copy of the model")
    num_cpus: float = Field(1.0, ge=0, description="ray: CPUs each actor reserves")
    num_gpus: float = Field(0.0, ge=0, description="ray: GPUs each actor reserves (1 for one GPU each)")
    queries_per_task: int | None = Field(None, gt=0, description=(
        "ray: queries sent to an actor at once (default: spread over 4 tasks per actor)"))

    def describe(self) -> str:
        if self.type != "ray":
            return ""
        return (f"ray: {self.workers} actors × ({self.num_cpus:g} CPU, {self.num_gpus:g} GPU)"
                f" at {self.address or 'a local instance'}")
