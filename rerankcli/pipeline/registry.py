"""The one map from YAML ``type:``/``method:`` names to stage classes.

Adding a stage or a method is one class and one line here (or ``register_method`` from outside
the package). Stage modules import their heavy libraries (bm25s, torch, ...) inside
``execute``, so importing this registry stays cheap.
"""

from __future__ import annotations

from rerankcli.core.stage import StageConfig
from rerankcli.evaluate.evaluate_stage import EvaluateStage
from rerankcli.rerank.cross_encoder import CrossEncoderStage
from rerankcli.rerank.e2rank import E2RankStage
from rerankcli.rerank.erank import ERankStage
from rerankcli.rerank.groupwise import GroupwiseStage
from rerankcli.rerank.icr import IcrStage
from rerankcli.rerank.listwise import ListwiseStage, ReasonRankStage
from rerankcli.rerank.pairwise import PairwiseStage
from rerankcli.rerank.pointwise import GradedStage, QueryLikelihoodStage, YesNoStage
from rerankcli.rerank.rank1 import Rank1Stage
from rerankcli.rerank.setwise import RankR1Stage, SetwiseStage
from rerankcli.rerank.tourrank import TourrankStage
from rerankcli.retrieve.bm25 import BM25Stage
from rerankcli.retrieve.dense import DenseStage
from rerankcli.retrieve.fusion import FuseStage
from rerankcli.retrieve.load import LoadStage

#: type -> class, or type -> {method -> class} when the type has several methods
STAGES: dict[str, type[StageConfig] | dict[str, type[StageConfig]]] = {
    "retrieve": {"bm25": BM25Stage, "dense": DenseStage},
    "rerank": {
        "cross-encoder": CrossEncoderStage,
        "yes-no": YesNoStage,
        "graded": GradedStage,
        "query-likelihood": QueryLikelihoodStage,
        "listwise": ListwiseStage,
        "pairwise": PairwiseStage,
        "icr": IcrStage,
        "setwise": SetwiseStage,
        "tourrank": TourrankStage,
        "groupwise": GroupwiseStage,
        "e2rank": E2RankStage,
        "rank1": Rank1Stage,
        "erank": ERankStage,
        "reasonrank": ReasonRankStage,
        "rank-r1": RankR1Stage,
    },
    "fuse": FuseStage,
    "load": LoadStage,
    "evaluate": EvaluateStage,
}


def register_method(stage_type: str, method: str, cls: type[StageConfig]) -> type[StageConfig]:
    """Make ``type: stage_type, method: method`` available to every pipeline (a plugin, a test).

    The class is a stage config like the shipped ones; an LLM reranker subclasses
    ``LLMRerankStage`` and gets resume, shards, Ray, ``plan`` and the call cache from the
    execution layer without touching it.
    """
    entry = STAGES.setdefault(stage_type, {})
    if not isinstance(entry, dict):
        raise ValueError(f"stage type {stage_type!r} has no methods")
    entry[method] = cls
    return cls


def stage_classes() -> dict[str, type[StageConfig]]:
    """Every registered stage class, named ``type`` or ``type/method``."""
    found: dict[str, type[StageConfig]] = {}
    for kind, entry in STAGES.items():
        if isinstance(entry, dict):
            found.update({f"{kind}/{method}": cls for method, cls in entry.items()})
        else:
            found[kind] = entry
    return found


#: the entry-point group through which installed packages add methods and backends
PLUGIN_GROUP = "rerankcli.plugins"
_plugins_loaded = False


def load_plugins() -> list[str]:
    """Import every module that an installed package names under ``rerankcli.plugins``.

    A plugin module registers its methods and backends when imported (``register_method``,
    ``register_backend``), so a pipeline can use them by name from the command line, and Ray
    workers, which import the plugin to unpickle its stage class, know them too. Loaded once
    per process; a plugin that fails to import stops with one line naming it.
    """
    global _plugins_loaded
    if _plugins_loaded:
        return []
    _plugins_loaded = True
    from importlib.metadata import entry_points

    from rerankcli.core.errors import UserError

    loaded = []
    for point in entry_points(group=PLUGIN_GROUP):
        try:
            point.load()
        except Exception as exc:  # a plugin's own bug: name it rather than show its traceback
            raise UserError(f"plugin {point.name!r} ({point.value}) failed to load: "
                            f"{type(exc).__name__}: {exc}") from None
        loaded.append(point.name)
    return loaded
