"""Bad pipeline files: one line naming file, line, stage and field; exit 2; nothing written."""

from pathlib import Path

import pytest

from tests.conftest import DEMO, assert_user_error, snapshot

HEAD = f"""name: bad
dataset:
  corpus: {DEMO / 'corpus.jsonl'}
  queries: {DEMO / 'queries.tsv'}
  qrels: {DEMO / 'qrels.txt'}
output: out
stages:
"""

CASES = {
    "yaml syntax": (HEAD + "  - {name: bm25, type: retrieve, method: bm25\n", [":9:"]),
    "unknown stage type": (HEAD + "  - {name: x, type: rerankk}\n", [":8:", "stage 'x' (stages[0])", "unknown stage type 'rerankk'"]),
    "unknown method": (HEAD + "  - {name: x, type: retrieve, method: splade}\n", [":8:", "unknown method 'splade'", "known: bm25, dense"]),
    "unknown field": (HEAD + "  - name: x\n    type: retrieve\n    method: bm25\n    kk: 10\n", [":11:", "stage 'x'", "unknown field 'kk'"]),
    "wrong type": (HEAD + "  - name: x\n    type: retrieve\n    method: bm25\n    k: many\n", [":11:", "field 'k'", "valid integer"]),
    "out of range": (HEAD + "  - {name: x, type: retrieve, method: bm25, b: 2}\n", [":8:", "field 'b'", "less than or equal to 1"]),
    "unknown backend": (HEAD + "  - {name: x, type: retrieve, method: bm25, backend: lucy}\n", ["field 'backend'", "unknown backend 'lucy'"]),
    "nested analyzer field": (HEAD + "  - name: x\n    type: retrieve\n    method: bm25\n    analyzer:\n      stemmer: klingon\n", [":12:", "field 'analyzer.stemmer'", "unknown stemmer"]),
    "python tag": (HEAD + "  - !!python/object/apply:os.system ['echo hi']\n", [":8:", "is not allowed"]),
    "missing stage type": (HEAD + "  - {name: x, method: bm25}\n", [":8:", "missing required field 'type'"]),
    "input names a later stage": (HEAD + "  - {name: e, type: evaluate, input: b}\n  - {name: b, type: retrieve, method: bm25}\n", [":8:", "stage 'e'", "stage 'b' comes later"]),
    "input names an unknown stage": (HEAD + "  - {name: b, type: retrieve, method: bm25}\n  - {name: f, type: fuse, inputs: [b, c]}\n", [":9:", "field 'inputs'", "stage 'c' does not exist"]),
    "stage reads itself": (HEAD + "  - {name: b, type: retrieve, method: bm25}\n  - {name: e, type: evaluate, input: e}\n", [":9:", "cannot read itself"]),
    "duplicate stage names": (HEAD + "  - {name: b, type: retrieve, method: bm25}\n  - {name: b, type: retrieve, method: bm25}\n", [":9:", "already used"]),
    "evaluate first": (HEAD + "  - {name: e, type: evaluate}\n", [":8:", "no stage before it makes one"]),
    "unknown metric": (HEAD + "  - {name: b, type: retrieve, method: bm25}\n  - {name: e, type: evaluate, metrics: [ndcg@10, nDGC]}\n", [":9:", "field 'metrics'", "unknown metric 'nDGC'"]),
    "fuse with one input": (HEAD + "  - {name: b, type: retrieve, method: bm25}\n  - {name: f, type: fuse, inputs: [b]}\n", [":9:", "at least two stages"]),
    "bad stage name": (HEAD + "  - {name: ../evil, type: retrieve, method: bm25}\n", [":8:", "field 'name'"]),
    "unknown top-level key": ("nme: x\n" + HEAD.split("\n", 1)[1] + "  - {name: b, type: retrieve, method: bm25}\n", [":1:", "unknown field 'nme' (did you mean 'name'?)"]),
    "missing corpus file": (HEAD.replace(str(DEMO / "corpus.jsonl"), "nowhere.jsonl") + "  - {name: b, type: retrieve, method: bm25}\n", [":3:", "dataset.corpus: file not found"]),
    "missing run file": (HEAD + "  - {name: s, type: load, run: absent.trec}\n", [":8:", "field 'run'", "run file not found"]),
    "dataset part not set": ("name: x\ndataset: {queries: " + str(DEMO / "queries.tsv") + "}\nstages:\n  - {name: b, type: retrieve, method: bm25}\n", [":4:", "needs dataset.corpus"]),
    "method is a list": (HEAD + "  - {name: x, type: retrieve, method: [bm25]}\n", [":8:", "unknown method ['bm25']"]),
    "pipeline name escapes": (HEAD.replace("name: bad", "name: ../../etc") + "  - {name: b, type: retrieve, method: bm25}\n", [":1:", "field 'name'"]),
    "no stages": ("name: x\nstages: []\n", [":2:", "no stages"]),
    "not a mapping": ("- just\n- a list\n", [":1:", "is a mapping"]),
    "dense without model": (HEAD + "  - {name: d, type: retrieve, method: dense}\n", [":8:", "missing required field 'model'"]),
    "unknown model": (HEAD + "  - {name: d, type: retrieve, method: dense, model: ./no-such-model}\n", ["model './no-such-model' not found", "tried"]),
    "lucene index with bm25s": (HEAD + "  - {name: x, type: retrieve, method: bm25, index: ./idx}\n", [":8:", "field 'index'", "applies to backend 'pyserini' only"]),
    "rm3 with bm25s": (HEAD + "  - name: x\n    type: retrieve\n    method: bm25\n    rm3: true\n", [":11:", "field 'rm3'", "applies to backend 'pyserini' only"]),
    "missing lucene index dir": (HEAD + "  - {name: x, type: retrieve, method: bm25, backend: pyserini, index: ./no-index}\n", [":8:", "field 'index'", "no Lucene index at"]),
    "analyzer with pyserini": (HEAD + "  - name: x\n    type: retrieve\n    method: bm25\n    backend: pyserini\n    analyzer: {stemmer: none}\n", [":12:", "field 'analyzer'", "Lucene's English analyzer"]),
    "unknown rm3 field": (HEAD + "  - name: x\n    type: retrieve\n    method: bm25\n    backend: pyserini\n    rm3:\n      fb_term: 5\n", [":13:", "unknown field 'rm3.fb_term'"]),
    "model package not installed": (HEAD + "  - {name: d, type: retrieve, method: dense, model: 'package:no-such-dist'}\n", ["package:no-such-dist", "not installed"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_pipeline_exits_2_with_one_clear_line(rerank, tmp_path: Path, case: str) -> None:
    text, fragments = CASES[case]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    before = snapshot(tmp_path)
    result = rerank("run", path)
    assert_user_error(result, str(path) if fragments[0].startswith(":") else "", *fragments)
    if fragments[0].startswith(":"):
        assert f"{path}{fragments[0]}" in result.err
    assert snapshot(tmp_path) == before, "a failed run must write nothing"


def test_missing_pipeline_file_exits_2(rerank, tmp_path: Path) -> None:
    assert_user_error(rerank("run", tmp_path / "absent.yaml"), "absent.yaml: pipeline file not found")


def test_relative_paths_resolve_against_the_pipeline_file(rerank, tmp_path: Path) -> None:
    folder = tmp_path / "sub"
    folder.mkdir()
    (folder / "q.tsv").write_text("q1\ttry statement\n")
    (folder / "p.yaml").write_text(
        f"name: rel\ndataset: {{corpus: {DEMO / 'corpus.jsonl'}, queries: q.tsv}}\n"
        "stages:\n  - {name: b, type: retrieve, method: bm25, k: 5}\n")
    result = rerank("run", folder / "p.yaml", cwd=tmp_path)
    assert result.code == 0, result.err
    assert (folder / "runs" / "rel" / "b.trec").read_text().startswith("q1 Q0 ")
