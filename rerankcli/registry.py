"""The one map from YAML ``type:``/``method:`` names to stage classes.

Adding a stage or a method is one class and one line here. Stage modules import their heavy
libraries (bm25s, torch, ...) inside ``execute``, so importing this registry stays cheap.
"""

from __future__ import annotations

from rerankcli.evaluate.stage import EvaluateStage
from rerankcli.retrieve.bm25 import BM25Stage
from rerankcli.retrieve.dense import DenseStage
from rerankcli.retrieve.fusion import FuseStage
from rerankcli.load import LoadStage
from rerankcli.rerank.cross_encoder import CrossEncoderStage
from rerankcli.rerank.icr import IcrStage
from rerankcli.rerank.listwise import ListwiseStage
from rerankcli.rerank.pairwise import PairwiseStage
from rerankcli.rerank.pointwise import GradedStage, QueryLikelihoodStage, YesNoStage
from rerankcli.stage import StageConfig

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
    },
    "fuse": FuseStage,
    "load": LoadStage,
    "evaluate": EvaluateStage,
}
