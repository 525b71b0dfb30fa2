"""``irds:`` datasets through ir_datasets' real cache: no mock, no network.

The test builds the archive that ir_datasets would download for beir/scifact from the
SciFact files in ../shared/data and puts it where ir_datasets' download spec caches it
(``$IR_DATASETS_HOME/beir/scifact/source.zip``); ir_datasets then reads it as usual.
"""

import json
import zipfile
from pathlib import Path

import pytest

from tests.conftest import assert_user_error, shared


@pytest.fixture
def irds_home(tmp_path: Path) -> Path:
    scifact = shared("scifact")
    home = tmp_path / "irds"
    archive = home / "beir" / "scifact" / "source.zip"
    archive.parent.mkdir(parents=True)
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(scifact / "corpus.jsonl", "scifact/corpus.jsonl")
        zf.write(scifact / "queries.jsonl", "scifact/queries.jsonl")
        zf.write(scifact / "qrels" / "test.tsv", "scifact/qrels/test.tsv")
    return home


def test_irds_scifact_pipeline_matches_the_local_files(rerank, tmp_path: Path, irds_home: Path) -> None:
    scifact = shared("scifact")
    stages = ("stages:\n  - {name: bm25, type: retrieve, method: bm25, k: 100}\n"
              "  - {name: eval, type: evaluate, metrics: [ndcg@10]}\n")
    (tmp_path / "irds.yaml").write_text(f"name: a\ndataset: irds:beir/scifact/test\noutput: a\n{stages}")
    (tmp_path / "files.yaml").write_text(
        f"name: b\noutput: b\ndataset: {{corpus: {scifact / 'corpus.jsonl'}, "
        f"queries: {scifact / 'queries.jsonl'}, qrels: {scifact / 'qrels' / 'test.tsv'}}}\n{stages}")
    env = {"IR_DATASETS_HOME": str(irds_home)}
    via_irds = rerank("run", tmp_path / "irds.yaml", env=env)
    assert via_irds.code == 0, via_irds.err
    via_files = rerank("run", tmp_path / "files.yaml")
    assert via_files.code == 0, via_files.err
    assert (tmp_path / "a" / "bm25.trec").read_bytes() == (tmp_path / "b" / "bm25.trec").read_bytes()
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["bm25"]["ndcg@10"] > 0.67


def test_unknown_irds_id_exits_2(rerank, tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "name: x\ndataset: irds:no/such/dataset\nstages:\n  - {name: b, type: retrieve, method: bm25}\n")
    assert_user_error(rerank("run", tmp_path / "p.yaml", env={"IR_DATASETS_HOME": str(tmp_path)}),
                      "irds:no/such/dataset", "unknown ir_datasets id")
