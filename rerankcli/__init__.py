"""rerankcli: retrieval and reranking pipelines declared in YAML, with TREC runs between stages."""

__version__ = "0.1.0"
