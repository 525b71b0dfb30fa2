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
BM25 = "  - {name: b, type: retrieve, method: bm25}\n"

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
    # -- round two: ~ and $VAR, empty paths, portable stage names, numbers, metrics.json keys ---
    "unset variable in a dataset path": (HEAD.replace(str(DEMO), "$RERANK_TEST_UNSET", 1) + BM25, [":3:", "field 'dataset.corpus'", "'$RERANK_TEST_UNSET/corpus.jsonl': $RERANK_TEST_UNSET is not set"]),
    "unset braced variable in a run path": (HEAD + "  - {name: s, type: load, run: '${RERANK_TEST_UNSET}/r.trec'}\n", [":8:", "stage 's' (stages[0]): field 'run'", "$RERANK_TEST_UNSET is not set"]),
    "variable brace never closed": (HEAD + "  - {name: s, type: load, run: '${HOME/r.trec'}\n", [":8:", "field 'run'", "'${' is never closed by '}'"]),
    "home of an unknown user": (HEAD + "  - {name: s, type: load, run: '~rerank-no-such-user/r.trec'}\n", [":8:", "field 'run'", "~rerank-no-such-user: no such user"]),
    "empty output": (HEAD.replace("output: out", "output: ''") + BM25, [":6:", "field 'output' is empty"]),
    "empty cache": (HEAD + BM25 + "cache: ''\n", [":9:", "field 'cache' is empty"]),
    "empty run path": (HEAD + "  - {name: s, type: load, run: ''}\n", [":8:", "stage 's' (stages[0]): field 'run' is empty"]),
    "empty model": (HEAD + "  - {name: d, type: retrieve, method: dense, model: ' '}\n", [":8:", "field 'model' is empty"]),
    "output below a file": (HEAD.replace("output: out", f"output: {DEMO / 'qrels.txt'}/out") + BM25, [":6:", "field 'output'", "qrels.txt is a file, not a folder"]),
    "stage names differ only in case": (HEAD + "  - {name: BM25, type: retrieve, method: bm25}\n" + BM25.replace("name: b,", "name: bm25,"), [":9:", "stage 'bm25'", "differs only in case from stage 'BM25' (line 8)", "case-insensitive"]),
    "stage name too long": (HEAD + BM25.replace("name: b,", f"name: {'x' * 101},"), [":8:", "field 'name'", "has 101 characters; at most 100"]),
    "stage name is a Windows device": (HEAD + BM25.replace("name: b,", "name: NUL.x,"), [":8:", "field 'name'", "'NUL', a device name on Windows"]),
    "pipeline name ends in a dot": (HEAD.replace("name: bad", "name: bad.") + BM25, [":1:", "field 'name'", "ends in '.'"]),
    "boolean for a number": (HEAD + "  - {name: b, type: retrieve, method: bm25, k: true}\n", [":8:", "field 'k': true is a boolean, not a number"]),
    "nan among fuse weights": (HEAD + BM25 + BM25.replace("name: b,", "name: c,") + "  - {name: f, type: fuse, inputs: [b, c], weights: [.nan, 1]}\n", [":10:", "field 'weights'", "is not a finite number"]),
    "infinite rrf_k": (HEAD + BM25 + BM25.replace("name: b,", "name: c,") + "  - {name: f, type: fuse, inputs: [b, c], rrf_k: .inf}\n", [":10:", "field 'rrf_k'", "is not a finite number"]),
    "boolean in a backend field": (HEAD + BM25 + "  - {name: l, type: rerank, method: listwise, model: m, backend: {type: hf, batch_size: false}}\n", [":9:", "field 'backend.batch_size': false is a boolean"]),
    "metric listed twice in two spellings": (HEAD + BM25 + "  - {name: e, type: evaluate, metrics: [ndcg@10, nDCG_cut.10]}\n", [":9:", "metric ndcg@10 is listed twice ('ndcg@10' and 'nDCG_cut.10' are one metric)"]),
    "two evaluate stages write one metric": (HEAD + BM25 + "  - {name: e1, type: evaluate, metrics: [map]}\n  - {name: e2, type: evaluate, inputs: [b], metrics: [MAP], relevance_level: 2}\n", [":10:", "stage 'e2'", "map of run 'b' is already evaluated by stage 'e1'", "metrics.json"]),
    "evaluate with empty inputs": (HEAD + BM25 + "  - {name: e, type: evaluate, inputs: []}\n", [":9:", "field 'inputs' is empty"]),
    "package without a name": (HEAD + "  - {name: d, type: retrieve, method: dense, model: 'package:'}\n", [":8:", "field 'model'", "no distribution name after 'package:'"]),
    "package name with a slash": (HEAD + "  - {name: d, type: retrieve, method: dense, model: 'package:a/b'}\n", [":8:", "'a/b' is not a distribution name"]),
    "icr with no layers": (HEAD + BM25 + "  - {name: i, type: rerank, method: icr, model: m, layers: []}\n", [":9:", "field 'layers'", "list at least one layer"]),
    "rerank fields listed twice": (HEAD + BM25 + "  - {name: c, type: rerank, method: cross-encoder, model: m, fields: [text, text]}\n", [":9:", "field 'fields'", "'text' is listed twice"]),
    "icr layer listed twice": (HEAD + BM25 + "  - {name: i, type: rerank, method: icr, model: m, layers: [3, 3]}\n", [":9:", "layer 3 is listed twice"]),
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
