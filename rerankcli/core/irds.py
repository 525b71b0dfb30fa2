"""Datasets by ir_datasets id (``irds:beir/scifact/test``), through ir_datasets' own cache.

ir_datasets downloads on first use and keeps files under ``$IR_DATASETS_HOME`` (default
``~/.ir_datasets``). Where no download is possible, files placed in that cache as its
download spec expects are used as they are. Any failure becomes one line naming the id.
"""

from __future__ import annotations

import functools
import logging

from rerankcli.core.errors import UserError, is_resource_fault
from rerankcli.core.formats import Corpus, Qrels


@functools.cache
def irds_dataset(dataset_id: str):
    try:
        import ir_datasets
    except ImportError:
        raise UserError(f"irds:{dataset_id}: ir_datasets is not installed "
                        "(pip install 'rerankcli[irds]')") from None
    logging.getLogger("ir_datasets").setLevel(logging.WARNING)
    try:
        return ir_datasets.load(dataset_id)
    except KeyError:
        raise UserError(f"irds:{dataset_id}: unknown ir_datasets id") from None


def _guard(dataset_id: str, part: str, read):
    try:
        return read()
    except UserError:
        raise
    except Exception as exc:  # downloads fail in many ways (DNS, HTTP, checksum, disk)
        if is_resource_fault(exc):  # disk full, permission denied: exit 75 with the path, not "bad input"
            raise
        raise UserError(
            f"irds:{dataset_id}: could not read its {part} ({type(exc).__name__}: {exc}); "
            "without network, place the files in $IR_DATASETS_HOME as ir_datasets expects, "
            "or use local files"
        ) from None


def _require(dataset_id: str, part: str) -> object:
    dataset = irds_dataset(dataset_id)
    if not getattr(dataset, f"has_{part}")():
        raise UserError(f"irds:{dataset_id}: the dataset has no {part}")
    return dataset


def irds_corpus(dataset_id: str) -> Corpus:
    dataset = _require(dataset_id, "docs")

    def read() -> Corpus:
        ids, titles, texts = [], [], []
        for doc in dataset.docs_iter():
            ids.append(doc.doc_id)
            titles.append(getattr(doc, "title", "") or "")
            text = getattr(doc, "text", None)
            texts.append(text if isinstance(text, str) else doc.default_text())
        return Corpus(ids, titles, texts)

    return _guard(dataset_id, "documents", read)


def irds_queries(dataset_id: str) -> dict[str, str]:
    dataset = _require(dataset_id, "queries")

    def read() -> dict[str, str]:
        out = {}
        for query in dataset.queries_iter():
            text = getattr(query, "text", None)
            out[query.query_id] = text if isinstance(text, str) else query.default_text()
        return out

    return _guard(dataset_id, "queries", read)


def irds_qrels(dataset_id: str) -> Qrels:
    dataset = _require(dataset_id, "qrels")

    def read() -> Qrels:
        qrels: Qrels = {}
        for judgement in dataset.qrels_iter():
            qrels.setdefault(judgement.query_id, {})[judgement.doc_id] = int(judgement.relevance)
        return qrels

    return _guard(dataset_id, "qrels", read)
