"""BRIGHT's layout read as a dataset (``dataset: {bright: PATH, domain: ...}``), on a tiny copy of
that layout the tests write: parquet shards as a hub snapshot has them, JSONL, and
``save_to_disk`` folders; evaluation removes each query's excluded ids as BRIGHT's scorer does.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from rerankcli.core.bright import NONE_EXCLUDED
from rerankcli.core.dataset import Dataset, DatasetConfig
from rerankcli.core.errors import UserError
from tests.conftest import DEMO, ROOT, SHARED, assert_user_error

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

BIOLOGY_DOCUMENTS = [
    # a copy of the question itself: BRIGHT excludes such documents for the query they copy
    {"id": "bees_uv/post_0.txt", "content": "how do bees see ultraviolet light bees see ultraviolet"},
    {"id": "bees_uv/Ultraviolet_1.txt", "content": "bees have photoreceptors that see ultraviolet light on flowers"},
    {"id": "leaves/Autumn_0.txt", "content": "leaves change colour in autumn when chlorophyll breaks down"},
    {"id": "leaves/Carotenoid_2.txt", "content": "carotenoids give autumn leaves their yellow colour"},
    {"id": "sleep/Sleep_0.txt", "content": "insects sleep at night and bees sleep too"},
    {"id": "fashion/Autumn_0.txt", "content": "autumn fashion: change your autumn colour, change in autumn"},
    {"id": "light/Light_0.txt", "content": "light travels fast and insects see light"},
]
BIOLOGY_LONG = [
    {"id": "bees_uv.txt", "content": "bees have photoreceptors that see ultraviolet light on flowers"},
    {"id": "leaves.txt", "content": "leaves change colour in autumn; carotenoids give them yellow"},
    {"id": "sleep.txt", "content": "insects sleep at night"},
]
BIOLOGY_EXAMPLES = [
    {"id": "0", "query": "how do bees see ultraviolet light", "reasoning": "photoreceptors",
     "gold_ids": ["bees_uv/Ultraviolet_1.txt"], "gold_ids_long": ["bees_uv.txt"],
     "excluded_ids": ["bees_uv/post_0.txt"]},
    {"id": "1", "query": "why do leaves change colour in autumn", "reasoning": "pigments",
     "gold_ids": ["leaves/Autumn_0.txt", "leaves/Carotenoid_2.txt"], "gold_ids_long": ["leaves.txt"],
     "excluded_ids": [NONE_EXCLUDED]},
    {"id": "2", "query": "do insects sleep or see light at night", "reasoning": "rest",
     "gold_ids": ["sleep/Sleep_0.txt"], "gold_ids_long": ["sleep.txt"],
     "excluded_ids": [NONE_EXCLUDED, "light/Light_0.txt"]},
]
ROBOTICS_DOCUMENTS = [
    {"id": "ros/Node_0.txt", "content": "a ros node publishes messages on topics"},
    {"id": "pid/Control_0.txt", "content": "a pid controller tunes gains"},
]
ROBOTICS_EXAMPLES = [
    {"id": "0", "query": "how do I tune pid gains", "reasoning": "", "gold_ids": ["pid/Control_0.txt"],
     "gold_ids_long": ["N/A"], "excluded_ids": ["N/A"]},
]
TABLES = {
    "documents": {"biology": BIOLOGY_DOCUMENTS, "robotics": ROBOTICS_DOCUMENTS},
    "long_documents": {"biology": BIOLOGY_LONG},
    "examples": {"biology": BIOLOGY_EXAMPLES, "robotics": ROBOTICS_EXAMPLES},
}


def write_bright(root: Path, form: str = "parquet") -> Path:
    """BRIGHT's tables under ``root`` as ``form``: parquet (biology's documents in two shards, as a
    larger domain of a hub snapshot is), jsonl, or save_to_disk folders (one DatasetDict per config)."""
    for config, splits in TABLES.items():
        folder = root / config
        folder.mkdir(parents=True, exist_ok=True)
        if form == "disk":
            datasets = pytest.importorskip("datasets")
            datasets.DatasetDict({d: datasets.Dataset.from_list(rows) for d, rows in splits.items()}
                                 ).save_to_disk(str(folder))
            continue
        for domain, rows in splits.items():
            parts = [rows[:3], rows[3:]] if (config, domain) == ("documents", "biology") else [rows]
            for index, part in enumerate(parts):
                stem = folder / f"{domain}-{index:05d}-of-{len(parts):05d}"
                if form == "parquet":
                    pq.write_table(pa.Table.from_pylist(part), f"{stem}.parquet")
                else:
                    Path(f"{stem}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in part))
    return root


def bright_pipeline(folder: Path, root: Path, domain: str = "biology", **dataset) -> Path:
    path = folder / "p.yaml"
    doc = {"name": "b", "dataset": {"bright": str(root), "domain": domain, **dataset}, "output": "out",
           "stages": [{"name": "bm25", "type": "retrieve", "method": "bm25", "k": 10},
                      {"name": "eval", "type": "evaluate", "metrics": ["ndcg@10", "mrr@10"]}]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def dataset(root: Path, domain: str = "biology", **fields) -> Dataset:
    return Dataset(DatasetConfig(bright=root, domain=domain, **fields))


def ranked(trec: Path) -> dict[str, list[str]]:
    """query -> documents in the order of the run file's rank column."""
    lines = [line.split() for line in trec.read_text().splitlines()]
    out: dict[str, list[tuple[int, str]]] = {}
    for qid, _, doc, rank, _, _ in lines:
        out.setdefault(qid, []).append((int(rank), doc))
    return {qid: [doc for _, doc in sorted(docs)] for qid, docs in out.items()}


def hand_metrics(ranking: dict[str, list[str]], gold: dict[str, set[str]]) -> dict[str, float]:
    """Mean binary nDCG@10 and MRR@10 over the judged queries of ``ranking``, written out."""
    ndcg, mrr = [], []
    for qid, docs in ranking.items():
        relevant = gold[qid]
        dcg = sum(1 / math.log2(rank + 1) for rank, doc in enumerate(docs[:10], 1) if doc in relevant)
        ideal = sum(1 / math.log2(rank + 1) for rank in range(1, min(len(relevant), 10) + 1))
        ndcg.append(dcg / ideal)
        mrr.append(next((1 / rank for rank, doc in enumerate(docs[:10], 1) if doc in relevant), 0.0))
    return {"ndcg@10": sum(ndcg) / len(ndcg), "mrr@10": sum(mrr) / len(mrr)}


# -- end to end --------------------------------------------------------------------------------

def test_a_bright_pipeline_evaluates_runs_without_each_querys_excluded_ids(rerank, tmp_path: Path) -> None:
    root = write_bright(tmp_path / "bright")
    result = rerank("run", bright_pipeline(tmp_path, root))
    assert result.code == 0, result.err
    out = tmp_path / "out"
    run = ranked(out / "bm25.trec")
    assert set(run) == {"0", "1", "2"}
    excluded = {e["id"]: set(e["excluded_ids"]) - {NONE_EXCLUDED} for e in BIOLOGY_EXAMPLES}
    gold = {e["id"]: set(e["gold_ids"]) for e in BIOLOGY_EXAMPLES}
    assert run["0"][0] == "bees_uv/post_0.txt"  # the copy of the question ranks first: exclusion matters
    kept = {qid: [doc for doc in docs if doc not in excluded[qid]] for qid, docs in run.items()}
    expected = hand_metrics(kept, gold)
    metrics = json.loads((out / "metrics.json").read_text())["bm25"]
    assert metrics == pytest.approx(expected, abs=1e-12)
    assert metrics["mrr@10"] > hand_metrics(run, gold)["mrr@10"]
    details = json.loads((out / "eval.manifest.json").read_text())["details"]
    assert details["excluded_ids_dropped"] == [sum(len(run[q]) - len(kept[q]) for q in run)] == [2]


def test_the_bundled_bright_pipeline_validates_on_a_bright_layout(rerank, tmp_path: Path) -> None:
    root = write_bright(tmp_path / "data" / "bright")
    text = (ROOT / "pipelines" / "bright-biology.yaml").read_text().replace("../../shared/data", str(tmp_path / "data"))
    (tmp_path / "bright-biology.yaml").write_text(text)
    result = rerank("validate", tmp_path / "bright-biology.yaml")
    assert result.code == 0, result.err
    assert root.is_dir() and "valid" in result.out


def test_the_bundled_bright_pipeline_without_its_data_fails_with_one_line(rerank) -> None:
    if (SHARED / "bright").exists():
        pytest.skip("../shared/data/bright is there")
    assert_user_error(rerank("validate", ROOT / "pipelines" / "bright-biology.yaml"),
                      "bright-biology.yaml:", "dataset.bright: folder not found", str(SHARED / "bright"))


# -- layouts -----------------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["jsonl", "disk"])
def test_jsonl_and_save_to_disk_tables_read_as_the_parquet_snapshot_does(tmp_path: Path, form: str) -> None:
    parquet = dataset(write_bright(tmp_path / "parquet"))
    other = dataset(write_bright(tmp_path / form, form))
    assert other.corpus() == parquet.corpus()
    assert other.all_queries() == parquet.all_queries()
    assert other.qrels() == parquet.qrels()
    assert other.excluded() == parquet.excluded()


def test_the_tables_become_corpus_queries_qrels_and_exclusions(tmp_path: Path) -> None:
    data = dataset(write_bright(tmp_path))
    corpus = data.corpus()
    assert corpus.ids == [d["id"] for d in BIOLOGY_DOCUMENTS]  # shards in order
    assert corpus.contents(1) == BIOLOGY_DOCUMENTS[1]["content"]
    assert data.all_queries() == {e["id"]: e["query"] for e in BIOLOGY_EXAMPLES}
    assert data.qrels() == {e["id"]: dict.fromkeys(e["gold_ids"], 1) for e in BIOLOGY_EXAMPLES}
    # "N/A" is BRIGHT's "none": query 1 excludes nothing, query 2 one document
    assert data.excluded() == {"0": {"bees_uv/post_0.txt"}, "2": {"light/Light_0.txt"}}


def test_long_documents_read_long_documents_and_gold_ids_long(tmp_path: Path) -> None:
    data = dataset(write_bright(tmp_path), documents="long")
    assert data.corpus().ids == [d["id"] for d in BIOLOGY_LONG]
    assert data.qrels() == {e["id"]: dict.fromkeys(e["gold_ids_long"], 1) for e in BIOLOGY_EXAMPLES}


def test_a_domain_reads_only_its_own_split(tmp_path: Path) -> None:
    data = dataset(write_bright(tmp_path), "robotics")
    assert data.corpus().ids == [d["id"] for d in ROBOTICS_DOCUMENTS]
    assert data.all_queries() == {"0": "how do I tune pid gains"} and data.excluded() == {}


# -- fingerprints ------------------------------------------------------------------------------

def test_fingerprints_follow_the_files_each_part_is_read_from(tmp_path: Path) -> None:
    root = write_bright(tmp_path)
    before = {part: dataset(root).fingerprint(part) for part in ("corpus", "queries", "qrels")}
    assert dataset(root, "robotics").fingerprint("corpus") != before["corpus"]
    assert dataset(root, documents="long").fingerprint("corpus") != before["corpus"]
    assert dataset(root, documents="long").fingerprint("qrels") != before["qrels"]
    examples = [dict(e, excluded_ids=["N/A"]) for e in BIOLOGY_EXAMPLES]
    pq.write_table(pa.Table.from_pylist(examples), root / "examples" / "biology-00000-of-00001.parquet")
    after = {part: dataset(root).fingerprint(part) for part in ("corpus", "queries", "qrels")}
    assert after["corpus"] == before["corpus"]
    assert after["queries"] != before["queries"] and after["qrels"] != before["qrels"]


def test_a_files_dataset_keeps_its_fingerprints_and_excludes_nothing(tmp_path: Path) -> None:
    from rerankcli.core.hashing import file_digest

    files = Dataset(DatasetConfig(corpus=DEMO / "corpus.jsonl", queries=DEMO / "queries.tsv", qrels=DEMO / "qrels.txt"))
    assert files.fingerprint("corpus") == file_digest(DEMO / "corpus.jsonl")
    assert files.fingerprint("queries") == (f"{file_digest(DEMO / 'queries.tsv')}#judged-by:"
                                            f"{file_digest(DEMO / 'qrels.txt')}")
    assert files.fingerprint("qrels") == file_digest(DEMO / "qrels.txt")
    assert files.excluded() == {} and files.source("qrels") == str(DEMO / "qrels.txt")


def test_a_files_pipeline_records_no_exclusions(rerank, tmp_path: Path) -> None:
    doc = {"name": "d", "dataset": {"corpus": str(DEMO / "corpus.jsonl"), "queries": str(DEMO / "queries.tsv"),
                                    "qrels": str(DEMO / "qrels.txt")}, "output": "out",
           "stages": [{"name": "bm25", "type": "retrieve", "method": "bm25", "k": 10},
                      {"name": "eval", "type": "evaluate", "metrics": ["ndcg@10"]}]}
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(doc))
    result = rerank("run", tmp_path / "d.yaml")
    assert result.code == 0, result.err
    manifest = json.loads((tmp_path / "out" / "eval.manifest.json").read_text())
    assert manifest["details"] == {"runs": 1}
    assert set(manifest["fingerprint"]) == {"qrels", "versions"}


# -- bad layouts: one line each ----------------------------------------------------------------

def unchanged(root: Path) -> Path:
    return root


def elsewhere(root: Path) -> Path:
    return root / "nowhere"


def without_biology_documents(root: Path) -> Path:
    for path in (root / "documents").glob("biology-*"):
        path.unlink()
    return root


def without_a_shard(root: Path) -> Path:
    (root / "documents" / "biology-00001-of-00002.parquet").unlink()
    return root


def examples_as(rows: list[dict]):
    def change(root: Path) -> Path:
        pq.write_table(pa.Table.from_pylist(rows), root / "examples" / "biology-00000-of-00001.parquet")
        return root
    return change


BAD = {
    "missing folder": (elsewhere, {}, [":3:", "dataset.bright: folder not found"]),
    "unknown domain": (unchanged, {"domain": "chemistry"},
                       ["dataset.domain: unknown domain 'chemistry'", "domains found in", "biology, robotics"]),
    "no documents table": (without_biology_documents, {},
                           ["dataset.domain: no 'documents' table for domain 'biology'", "found there: robotics"]),
    "no long documents for the domain": (unchanged, {"domain": "robotics", "documents": "long"},
                                         ["no 'long_documents' table for domain 'robotics'"]),
    "a missing shard": (without_a_shard, {},
                        ["dataset.bright:", "shards of domain 'biology' are not one complete set"]),
    "a missing column": (examples_as([{k: v for k, v in e.items() if k != "excluded_ids"} for e in BIOLOGY_EXAMPLES]),
                         {}, ["biology-00000-of-00001.parquet: no column 'excluded_ids'", "gold_ids"]),
    "a column of the wrong type": (examples_as([dict(e, gold_ids="bees_uv/Ultraviolet_1.txt") for e in BIOLOGY_EXAMPLES]),
                                   {}, ["biology-00000-of-00001.parquet row 1: column 'gold_ids' must be a list of ids, "
                                        "it is a str"]),
    "a gold id that is excluded": (examples_as([dict(e, excluded_ids=e["gold_ids"]) for e in BIOLOGY_EXAMPLES]), {},
                                   ["row 1: query '0': document 'bees_uv/Ultraviolet_1.txt' is in both gold_ids and "
                                    "excluded_ids"]),
    "no domain": (unchanged, {"domain": None}, ["a BRIGHT dataset needs 'domain'"]),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_bright_dataset_is_one_line(rerank, tmp_path: Path, case: str) -> None:
    change, fields, fragments = BAD[case]
    root = change(write_bright(tmp_path / "bright"))
    assert_user_error(rerank("validate", bright_pipeline(tmp_path, root, **fields)), *fragments)


def test_bad_jsonl_names_file_line_and_column(tmp_path: Path) -> None:
    root = write_bright(tmp_path, "jsonl")
    path = root / "documents" / "biology-00001-of-00002.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines) + json.dumps({"id": "x.txt", "text": "no content"}) + "\n")
    line = len(lines) + 1
    with pytest.raises(UserError, match=rf"biology-00001-of-00002.jsonl:{line}: no column 'content' \(columns: id, text\)"):
        dataset(root).corpus()


def test_domain_belongs_to_a_bright_dataset() -> None:
    with pytest.raises(ValueError, match="'domain' belongs to a BRIGHT dataset"):
        DatasetConfig(corpus=DEMO / "corpus.jsonl", domain="biology")
    with pytest.raises(ValueError, match="give one of 'bright', 'irds' or file paths"):
        DatasetConfig(bright=DEMO, domain="biology", qrels=DEMO / "qrels.txt")


def test_parquet_without_pyarrow_names_the_package(rerank, tmp_path: Path) -> None:
    root = write_bright(tmp_path / "bright")
    blocker = tmp_path / "blocker" / "pyarrow"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('pyarrow is blocked by the test')\n")
    result = rerank("validate", bright_pipeline(tmp_path, root), env={"PYTHONPATH": str(blocker.parent)})
    assert_user_error(result, "reading a BRIGHT parquet table needs pyarrow (pip install pyarrow)")
