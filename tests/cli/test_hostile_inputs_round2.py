"""Hostile input, round two: paths, shard files, prompt templates, model specs, evaluate stages.

The same contract as tests/cli/test_hostile_inputs.py, through the real CLI: exit code 2, no
traceback, exactly one ``error:`` line (the last) naming the file and line, or the stage and
field, or the option; a short line; and every file of the workspace (data, output and cache
folders) byte for byte as it was. The YAML-only cases of the same kinds (unset variables,
empty paths, stage names, numbers) are in tests/pipeline/test_config.py.

Then the positive side: ``~`` and ``$VAR`` in pipeline fields and command options really read
the file they name (HOME and variables point into the workspace), and a merge of well-formed
shard files works without loading any model.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import DEMO, assert_user_error, snapshot

CORPUS = (DEMO / "corpus.jsonl").read_bytes()
QUERIES = (DEMO / "queries.tsv").read_bytes()
QRELS = (DEMO / "qrels.txt").read_bytes()
#: q01 goes to shard 0 of 2, q02 and q03 to shard 1; with depth 2 the candidates are
#: q01: try, assert; q02: yield, try; q03: assert, try
RUN = (b"q01 Q0 try 1 3.0 given\nq01 Q0 assert 2 2.0 given\nq01 Q0 yield 3 1.0 given\n"
       b"q02 Q0 yield 1 1.5 given\nq02 Q0 try 2 1.0 given\n"
       b"q03 Q0 assert 1 1.0 given\nq03 Q0 try 2 0.5 given\n")
UNSET = "RERANK_TEST_SURELY_UNSET"

DATASET = "dataset: {corpus: data/corpus.jsonl, queries: data/queries.tsv, qrels: data/qrels.txt}\n"
LOAD = ("name: round2\n" + DATASET + "output: out\nstages:\n"
        "  - {name: given, type: load, run: data/given.trec}\n"
        "  - {name: eval, type: evaluate, metrics: [ndcg@10]}\n")
LOAD_ONLY = LOAD.split("  - {name: eval")[0]
BM25 = ("name: round2\n" + DATASET + "output: out\nstages:\n"
        "  - {name: bm25, type: retrieve, method: bm25, k: 5}\n")
LISTWISE = ("name: round2\n" + DATASET + "output: out\nstages:\n"
            "  - {name: given, type: load, run: data/given.trec}\n"
            "  - {name: llm, type: rerank, method: listwise, model: ./model, depth: 2, window: 2, stride: 1EXTRA}\n")


@dataclass
class Case:
    """Files written over the valid workspace, the command, and what the error line must say.

    ``{root}`` in arguments, fragments and files is the workspace folder. With ``earlier``, p.yaml
    first holds that pipeline and `rerank run` computes it (it must succeed) before p.yaml becomes
    ``pipeline`` and the snapshot is taken; ``env`` is added to the environment.
    """

    files: dict[str, bytes]
    expect: tuple[str, ...]
    args: tuple[str, ...] = ("validate", "{root}/p.yaml")
    pipeline: str = LOAD
    env: dict[str, str] = field(default_factory=dict)
    earlier: str | None = None


def template(**fields: object) -> bytes:
    """A listwise prompt template with these fields over valid ones (JSON is YAML)."""
    return json.dumps({"user": "Rank {num} passages for: {query}\n{passages}", **fields}).encode()


def listwise(extra: str = "") -> str:
    """The listwise pipeline with ``extra`` fields in its LLM stage."""
    return LISTWISE.replace("EXTRA", extra)


def with_prompt(path: str) -> str:
    return listwise(f", prompt: {path}")


def with_model(spec: str) -> str:
    return listwise().replace("model: ./model", f"model: '{spec}'")


CASES: dict[str, Case] = {
    # -- path options: empty, unset variables, a file where a folder must be -------------------
    "option: run --cache-dir ''": Case({}, ("rerank run", "'--cache-dir'", "empty path"),
                                       args=("run", "{root}/p.yaml", "--cache-dir", "")),
    "option: plan --cache-dir ''": Case({}, ("rerank plan", "'--cache-dir'", "empty path"),
                                        args=("plan", "{root}/p.yaml", "--cache-dir", "")),
    "option: index --cache-dir ''": Case({}, ("rerank index", "'--cache-dir'", "empty path"),
                                         args=("index", "{root}/p.yaml", "--cache-dir", "")),
    "option: merge --cache-dir with an unset variable": Case(
        {}, ("rerank merge", "'--cache-dir'", f"${UNSET} is not set"),
        args=("merge", "{root}/p.yaml", "--cache-dir", f"${UNSET}/cache")),
    "option: run --cache-dir below a file": Case(
        {}, ("'--cache-dir'", "{root}/data/qrels.txt is a file, not a folder"),
        args=("run", "{root}/p.yaml", "--cache-dir", "{root}/data/qrels.txt/cache")),
    "option: run of an empty pipeline path": Case({}, ("rerank run", "'pipeline'", "empty path"), args=("run", "")),
    "option: run of a pipeline under an unset variable": Case(
        {}, ("'pipeline'", f"${{{UNSET}}}/p.yaml", f"${UNSET} is not set"), args=("run", f"${{{UNSET}}}/p.yaml")),
    "option: pipeline under an unknown user's home": Case(
        {}, ("'pipeline'", "~rerank-no-such-user: no such user"), args=("validate", "~rerank-no-such-user/p.yaml")),
    "option: eval --qrels ''": Case({}, ("rerank eval", "'--qrels'", "empty path"),
                                    args=("eval", "{root}/data/given.trec", "--qrels", "")),
    "option: eval --qrels with an unset variable": Case(
        {}, ("'--qrels'", f"${UNSET} is not set"), args=("eval", "{root}/data/given.trec", "--qrels", f"${UNSET}")),
    "option: eval of a run under an unset variable": Case(
        {}, ("rerank eval", f"${UNSET} is not set"),
        args=("eval", f"${UNSET}/given.trec", "--qrels", "{root}/data/qrels.txt")),
    "option: eval of a run with an unclosed ${": Case(
        {}, ("rerank eval", "'${' is never closed"), args=("eval", "${HOME/given.trec", "--qrels", "{root}/data/qrels.txt")),
    "option: compare NAME= without a path": Case(
        {}, ("rerank compare", "'bm25='", "needs a path after '='"),
        args=("compare", "bm25=", "{root}/data/given.trec", "--qrels", "{root}/data/qrels.txt")),
    "option: compare --baseline ''": Case(
        {}, ("'--baseline'", "empty path"),
        args=("compare", "{root}/data/given.trec", "--baseline", "", "--qrels", "{root}/data/qrels.txt")),
    "option: compare --plot below a file": Case(
        {"data/other.trec": RUN}, ("'--plot'", "{root}/data/qrels.txt is a file, not a folder"),
        args=("compare", "{root}/data/given.trec", "{root}/data/other.trec", "--qrels", "{root}/data/qrels.txt",
              "--plot", "{root}/data/qrels.txt/diff.png")),
    "option: diff of an empty path": Case({}, ("rerank diff", "'run_b'", "empty path"),
                                          args=("diff", "{root}/data/given.trec", "")),
    "option: schema -o ''": Case({}, ("rerank schema", "'--output'", "empty path"), args=("schema", "-o", "")),
    "option: schema -o below a file": Case({}, ("'--output'", "{root}/data/qrels.txt is a file, not a folder"),
                                           args=("schema", "-o", "{root}/data/qrels.txt/schema.json")),
    # -- prompt templates: every field is text, checked when the pipeline is validated ---------
    "template: system is a list": Case(
        {"t.yaml": b"system:\n  - be terse\nuser: 'Rank {num}: {query}\n\n{passages}'\n"},
        ("{root}/t.yaml:1:", "field 'system' must be text, found a list"), pipeline=with_prompt("t.yaml")),
    "template: user is a mapping": Case(
        {"t.yaml": b"user: {query: passages}\n"},
        ("{root}/t.yaml:1:", "field 'user' must be text, found a mapping"), pipeline=with_prompt("t.yaml")),
    "template: answer_prefix is a number": Case(
        {"t.yaml": template(answer_prefix=1)},
        ("{root}/t.yaml:1:", "field 'answer_prefix' must be text, found a number", "(quote it)"),
        pipeline=with_prompt("t.yaml")),
    "template: item is a list": Case(
        {"t.yaml": template(item=["[{id}]", "{passage}"])},
        ("{root}/t.yaml:1:", "field 'item' must be text, found a list"), pipeline=with_prompt("t.yaml")),
    "template: system is true": Case(
        {"t.yaml": b"user: 'Rank: {query} {passages}'\nsystem: yes\n"},
        ("{root}/t.yaml:2:", "field 'system' must be text, found true/false"), pipeline=with_prompt("t.yaml")),
    "template: not UTF-8": Case({"t.yaml": b"user: 'caf\xe9 {query} {passages}'\n"},
                                ("{root}/t.yaml", "not valid UTF-8"), pipeline=with_prompt("t.yaml")),
    "template: a key twice": Case(
        {"t.yaml": b"user: 'a {query} {passages}'\nuser: 'b {query} {passages}'\n"},
        ("{root}/t.yaml:2:", "duplicate key 'user', first on line 1"), pipeline=with_prompt("t.yaml")),
    "template: file under an unset variable": Case(
        {}, ("{root}/p.yaml:6:", "stage 'llm'", "field 'prompt'", f"${UNSET} is not set"),
        pipeline=with_prompt(f"${UNSET}/t.yaml")),
    # -- model specs ---------------------------------------------------------------------------
    "model: an hf: prefix": Case({}, ("stage 'llm'", "model 'hf:org/name' not found", "'hf:' is no model prefix"),
                                 pipeline=with_model("hf:org/name")),
    "model: a hub id with a space": Case({}, ("stage 'llm'", "model 'org/my model' not found", "not a hub id"),
                                         pipeline=with_model("org/my model")),
    "model: a hub id with '..'": Case({}, ("stage 'llm'", "model 'org/..' not found", "not a hub id"),
                                      pipeline=with_model("org/..")),
    "model: package name with a space": Case(
        {}, ("{root}/p.yaml:6:", "stage 'llm'", "field 'model'", "' x' is not a distribution name"),
        pipeline=with_model("package: x")),
    # -- evaluate stages that would judge nothing ------------------------------------------------
    "evaluate: own qrels judge none of the queries": Case(
        {"data/other-qrels.txt": b"q99 0 try 1\n"},
        ("stage 'eval'", "field 'qrels'", "{root}/data/other-qrels.txt judges none of the queries"),
        args=("run", "{root}/p.yaml"),
        pipeline=LOAD.replace("metrics: [ndcg@10]}", "metrics: [ndcg@10], qrels: data/other-qrels.txt}")),
    "evaluate: no query of the run is judged": Case(
        {"data/queries.tsv": QUERIES + b"q99\tan unjudged question\n", "data/given.trec": b"q99 Q0 try 1 1.0 x\n"},
        ("stage 'eval'", "no query of its input run is judged in {root}/data/qrels.txt"), args=("run", "{root}/p.yaml"),
        earlier=LOAD_ONLY),
    "evaluate: no query judged, missing: zero": Case(
        {"data/queries.tsv": QUERIES + b"q99\tan unjudged question\n", "data/given.trec": b"q99 Q0 try 1 1.0 x\n"},
        ("stage 'eval'", "no query of run 'given' is judged"), args=("run", "{root}/p.yaml"),
        pipeline=LOAD.replace("metrics: [ndcg@10]}", "inputs: [given], metrics: [ndcg@10], missing: zero}"),
        earlier=LOAD_ONLY),
    # -- an output that is an input on macOS and Windows -----------------------------------------
    "output: a stage's run over an input that differs in case": Case(
        {"out/Given.trec": RUN}, ("{root}/p.yaml", "output given.trec would overwrite the input file",
                                  "case-insensitive file system"),
        args=("run", "{root}/p.yaml"), pipeline=LOAD.replace("data/given.trec", "out/Given.trec")),
    "eval: no query of the run is judged, --missing zero": Case(
        {"data/unjudged.trec": b"q99 Q0 try 1 1.0 x\n"}, ("{root}/data/unjudged.trec", "no query of the run is in"),
        args=("eval", "{root}/data/unjudged.trec", "--qrels", "{root}/data/qrels.txt", "--missing", "zero")),
    # -- the cache folder from the environment, fusion weights -----------------------------------
    "env: RERANK_CACHE_DIR names an unset variable": Case(
        {}, ("$RERANK_CACHE_DIR", f"${UNSET} is not set"), args=("run", "{root}/p.yaml"), pipeline=LOAD_ONLY,
        env={"RERANK_CACHE_DIR": f"${UNSET}/cache"}),
    "env: RERANK_CACHE_DIR lies below a file": Case(
        {}, ("cache folder {root}/data/qrels.txt/cache", "{root}/data/qrels.txt is a file"),
        args=("run", "{root}/p.yaml"), pipeline=LOAD_ONLY, env={"RERANK_CACHE_DIR": "{root}/data/qrels.txt/cache"}),
    "fuse: every weight is zero": Case(
        {}, ("{root}/p.yaml:7:", "stage 'fused'", "'weights' are all 0"),
        pipeline=LOAD_ONLY + "  - {name: again, type: load, run: data/given.trec}\n"
                             "  - {name: fused, type: fuse, inputs: [given, again], weights: [0, 0.0]}\n"),
    # -- JSON and YAML nested or numbered past what the parsers take ------------------------------
    "corpus: a JSONL line nested 100000 deep": Case(
        {"data/corpus.jsonl": CORPUS + b"[" * 100_000 + b"\n"}, ("{root}/data/corpus.jsonl:159:", "nested too deeply"),
        args=("run", "{root}/p.yaml"), pipeline=BM25),
    "corpus: an id of 5000 digits": Case(
        {"data/corpus.jsonl": CORPUS + b'{"_id": ' + b"1" * 5000 + b', "text": "x"}\n'},
        ("{root}/data/corpus.jsonl:159:", "invalid JSON", "4300 digits"), args=("run", "{root}/p.yaml"), pipeline=BM25),
    "queries: a JSONL line nested 100000 deep": Case(
        {"data/queries.jsonl": b'{"_id": "q01", "text": "what"}\n' + b'{"_id": "q02", "text": ' + b"[" * 100_000
         + b"\n"}, ("{root}/data/queries.jsonl:2:", "nested too deeply"), args=("run", "{root}/p.yaml"),
        pipeline=BM25.replace("queries.tsv", "queries.jsonl")),
    "pipeline: a date that is no date": Case(
        {}, ("{root}/p.yaml:2:", "cannot read '2024-13-45'", "quote it"), pipeline=LOAD.replace("\n", "\nwhen: 2024-13-45\n", 1)),
    "pipeline: a depth of 5000 digits": Case(
        {}, ("{root}/p.yaml:6:", "4300 digits", "quote it"), pipeline=listwise().replace("depth: 2", "depth: " + "9" * 5000)),
    # -- the command line: a split into no shards, a stage --force all cannot name ----------------
    "option: --shard 1/0": Case({}, ("--shard 1/0", "the number of shards N in i/N must be at least 1"),
                                args=("run", "{root}/p.yaml", "--shard", "1/0")),
    "option: --shard 0/0": Case({}, ("--shard 0/0", "must be at least 1"), args=("run", "{root}/p.yaml", "--shard", "0/0")),
    "option: --shard 1/1": Case({}, ("--shard 1/1", "must be below the number of shards (0/1)"),
                                args=("run", "{root}/p.yaml", "--shard", "1/1")),
}


def workspace(root: Path, files: dict[str, bytes], pipeline: str) -> None:
    """The demo data, a run file, a stand-in model folder, the pipeline, then ``files`` over them."""
    base = {"data/corpus.jsonl": CORPUS, "data/queries.tsv": QUERIES, "data/qrels.txt": QRELS,
            "data/given.trec": RUN, "model/config.json": b"{}\n", "p.yaml": pipeline.encode()}
    for name, content in {**base, **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.replace(b"{root}", str(root).encode()))


def check_refused(rerank, root: Path, args: tuple[str, ...], expect: tuple[str, ...],
                  env: dict[str, str] | None = None) -> None:
    """Exit 2 with one short error line holding ``expect``; nothing in ``root`` changed."""
    before = snapshot(root)
    result = rerank(*(a.replace("{root}", str(root)) for a in args), env=env, cwd=root)
    assert_user_error(result, *(f.replace("{root}", str(root)) for f in expect))
    assert len(result.err.splitlines()[-1]) < 400, "the error line quotes too much of the input"
    after = snapshot(root)
    assert sorted(after) == sorted(before), f"files appeared or vanished: {set(after) ^ set(before)}"
    assert after == before, "a refused command changed a file"


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(rerank, tmp_path: Path, name: str) -> None:
    case = CASES[name]
    root = tmp_path.resolve()
    workspace(root, case.files, case.earlier or case.pipeline)
    if case.earlier is not None:  # the stages before the refused one are cached and exported
        done = rerank("run", root / "p.yaml", cwd=root)
        assert done.code == 0, done.err
        (root / "p.yaml").write_text(case.pipeline)
    check_refused(rerank, root, case.args, case.expect, {k: v.replace("{root}", str(root)) for k, v in case.env.items()})


# -- shard files that `rerank merge` joins -------------------------------------------------------

SHARDED = listwise() + "  - {name: eval, type: evaluate, inputs: [given, llm], metrics: [ndcg@10]}\ncache: cache\n"
RECORD = {"windows": 1, "repaired_windows": 0, "repairs": {}}
USAGE = {"requests": {"Generate": 1}, "prompt_tokens": 12, "generated_tokens": 4, "truncated_passages": 0,
         "truncated_prompts": 0, "cache_hits": 0}


def line(qid: str, scores: dict, **fields: object) -> str:
    """One query's result as the journal writes it, with ``fields`` replaced or (None) removed."""
    item = {"qid": qid, "scores": scores, "record": RECORD, "usage": USAGE, "by": "test:1", **fields}
    return json.dumps({k: v for k, v in item.items() if v is not None}) + "\n"


def header(key: str, shard: str) -> str:
    return json.dumps({"journal": 1, "stage": "llm", "key": key, "shard": shard}) + "\n"


Q02 = line("q02", {"yield": 2.0, "try": 1.0})
Q03 = line("q03", {"assert": 2.0, "try": 1.0})

#: the body of shard 1 of 2 (after its header, "{head}" for another header), and the error line
SHARD_CASES: dict[str, tuple[str, tuple[str, ...]]] = {
    "score is NaN": (line("q02", {"yield": float("nan"), "try": 1.0}) + Q03,
                     (":2:", "query 'q02'", "the score of document 'yield' is not finite")),
    "score is infinite": (line("q02", {"yield": 2.0, "try": 1e999}) + Q03,
                          (":2:", "the score of document 'try' is not finite")),
    "score is a string": (line("q02", {"yield": "2.0", "try": 1.0}) + Q03,
                          (":2:", "the score of document 'yield' is not a number: '2.0'")),
    "score is true": (line("q02", {"yield": True, "try": 1.0}) + Q03, (":2:", "is not a number: True")),
    "last line cut short": (Q03 + Q02[:25], (":3:", "the line is cut short", "run shard 1/2 again")),
    "a line that is not JSON": (Q02 + "{qid: q03}\n", (":3:", "not valid JSON")),
    "a line that is not UTF-8": (Q02 + '{"qid": "caf\udce9"}\n', (":3:", "not valid UTF-8")),
    "a line that is a list": (Q02 + "[1, 2]\n", (":3:", "expected a JSON object (one query's result), found list")),
    "a result without usage": (line("q02", {"yield": 2.0, "try": 1.0}, usage=None) + Q03,
                               (":2:", "missing field 'usage'")),
    "a result with an unknown field": (line("q02", {"yield": 2.0, "try": 1.0}, note="x") + Q03,
                                       (":2:", "unknown field 'note'")),
    "scores is a list": (line("q02", [2.0, 1.0]) + Q03, (":2:", "field 'scores' must map document ids to scores")),
    "usage count is negative": (line("q02", {"yield": 2.0, "try": 1.0}, usage={**USAGE, "prompt_tokens": -1}) + Q03,
                                (":2:", "'usage.prompt_tokens' must be a count")),
    "a record lacks a field": (line("q02", {"yield": 2.0, "try": 1.0}, record={"windows": 1}) + Q03,
                               (":2:", "query 'q02': its record has fields", "unlike")),
    "a query twice": (Q02 + Q03 + Q02, (":4:", "query 'q02' appears twice (first on line 2)")),
    "a query of the other shard": (Q02 + Q03 + line("q01", {"try": 1.0, "assert": 2.0}),
                                   (":4:", "query 'q01' belongs to shard 0/2, not 1/2")),
    "a query not in the input run": (Q02 + Q03 + line("q05", {"try": 1.0}),
                                     (":4:", "query 'q05' is not a query of the input run of stage 'llm'")),
    # q99 hashes to shard 0: that it is in no shard of this input run is what the line must say
    "a query not in the input run, of the other shard's hash": (
        Q02 + Q03 + line("q99", {"try": 1.0}), (":4:", "query 'q99' is not a query of the input run of stage 'llm'")),
    "a line nested 100000 deep": (Q02 + "[" * 100_000 + "\n", (":3:", "JSON nested too deeply")),
    "a score too large for a float": (line("q02", {"yield": 10**400, "try": 1.0}) + Q03,
                                      (":2:", "the score of document 'yield' is not finite")),
    "a document id with white space": (line("q02", {"yield": 2.0, "try me": 1.0}) + Q03,
                                       (":2:", "document id 'try me' contains white space")),
    "a query id that is no Unicode text": (Q02 + Q03.replace('"q03"', '"q\\udce9"'),
                                           (":3:", "field 'qid'", "is not valid Unicode text")),
    "a second prepared state that differs": ('{"prepared": null}\n{"prepared": {"yes": ["Yes"]}}\n' + Q02 + Q03,
                                             (":3:", "a second 'prepared' line that differs from the first")),
    "a query of the input run missing": (Q03, ("llm.1-of-2.jsonl:", "query 'q02' of the input run", "is missing")),
    "a document that was not a candidate": (line("q02", {"yield": 2.0, "try": 1.0, "assert": 9.0}) + Q03,
                                            (":2:", "document 'assert' was not one of its 2 candidates")),
    "a candidate without a score": (line("q02", {"yield": 2.0}) + Q03, (":2:", "candidate 'try' has no score")),
    "the header names another shard": ("{head}" + Q02 + Q03, (":1:", "the header says shard '0/2'")),
}


def plan_keys(pipeline: Path) -> dict[str, str]:
    """The stage keys of ``pipeline``, as `rerank run` computes them (no stage runs)."""
    from rerankcli.pipeline.config import load_pipeline
    from rerankcli.pipeline.runner import Runner

    keys = Runner(load_pipeline(pipeline), log=lambda message: None, show_progress=False).plan()
    return {name: key for name, (key, _) in keys.items()}


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> tuple[Path, str]:
    """A workspace whose shard 0 of 2 is done (hand-written, so no model loads) and whose
    load stage is cached and exported: what `rerank merge` finds after `run --shard 0/2`."""
    root = tmp_path_factory.mktemp("sharded").resolve()
    workspace(root, {}, SHARDED)
    key = plan_keys(root / "p.yaml")["llm"]
    shards = root / "out" / "shards"
    shards.mkdir(parents=True)
    (shards / "llm.0-of-2.jsonl").write_text(header(key, "0/2") + line("q01", {"try": 1.0, "assert": 2.0}))
    done = subprocess.run([sys.executable, "-m", "rerankcli", "run", "p.yaml", "--shard", "0/2", "-q"],
                          cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return root, key


def copy_of(sharded: tuple[Path, str], tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path.resolve() / "ws"
    shutil.copytree(sharded[0], root, symlinks=True)
    return root, sharded[1]


@pytest.mark.parametrize("name", sorted(SHARD_CASES))
def test_a_bad_shard_file_stops_merge_with_one_line(rerank, sharded, tmp_path: Path, name: str) -> None:
    root, key = copy_of(sharded, tmp_path)
    body, expect = SHARD_CASES[name]
    text = body.replace("{head}", header(key, "0/2")) if body.startswith("{head}") else header(key, "1/2") + body
    shard = root / "out" / "shards" / "llm.1-of-2.jsonl"
    shard.write_bytes(text.encode("utf-8", "surrogateescape"))
    check_refused(rerank, root, ("merge", "p.yaml"), (str(shard),) + expect)


def test_a_bad_shard_file_stops_an_unsharded_run_too(rerank, sharded, tmp_path: Path) -> None:
    """`rerank run` joins the shards it finds: a damaged one is refused, not half-used."""
    root, key = copy_of(sharded, tmp_path)
    shard = root / "out" / "shards" / "llm.1-of-2.jsonl"
    shard.write_text(header(key, "1/2") + Q02 + Q03[:30])
    check_refused(rerank, root, ("run", "p.yaml"), (f"{shard}:3:", "the line is cut short"))


def test_merge_of_well_formed_shards_ranks_by_their_scores(rerank, sharded, tmp_path: Path) -> None:
    """The positive control of the cases above: the same shard files, whole, merge (no model loads)."""
    root, key = copy_of(sharded, tmp_path)
    (root / "out" / "shards" / "llm.1-of-2.jsonl").write_text(header(key, "1/2") + Q02 + Q03)
    result = rerank("merge", "p.yaml", "-q", cwd=root)
    assert result.code == 0, result.err
    ranked = [tuple(row.split()[:3:2]) for row in (root / "out" / "llm.trec").read_text().splitlines()]
    assert ranked == [("q01", "assert"), ("q01", "try"), ("q01", "yield"),
                      ("q02", "yield"), ("q02", "try"), ("q03", "assert"), ("q03", "try")]
    assert set(json.loads((root / "out" / "metrics.json").read_text())) == {"given", "llm"}


# -- ~ and $VAR read the file they name --------------------------------------------------------------

def test_tilde_and_variables_in_pipeline_paths_read_the_named_files(rerank, tmp_path: Path) -> None:
    """Data only under HOME and $DATA, the pipeline elsewhere: the run reads them and equals a plain run."""
    home, elsewhere = tmp_path / "home", tmp_path / "pipelines"
    workspace(home, {}, LOAD)
    elsewhere.mkdir()
    plain = rerank("run", home / "p.yaml", "-q", cwd=home)
    assert plain.code == 0, plain.err
    (elsewhere / "p.yaml").write_text(
        "name: expanded\n"
        "dataset: {corpus: ~/data/corpus.jsonl, queries: '${DATA}/queries.tsv', qrels: $DATA/qrels.txt}\n"
        "output: ~/expanded-out\ncache: $CACHE_HOME/c\nstages:\n"
        "  - {name: given, type: load, run: '~/data/given.trec'}\n"
        "  - {name: eval, type: evaluate, metrics: [ndcg@10], qrels: '$DATA/qrels.txt'}\n")
    env = {"HOME": str(home), "DATA": str(home / "data"), "CACHE_HOME": str(tmp_path)}
    result = rerank("run", elsewhere / "p.yaml", "-q", env=env, cwd=tmp_path)
    assert result.code == 0, result.err
    for name in ("given.trec", "metrics.json"):
        assert (home / "expanded-out" / name).read_bytes() == (home / "out" / name).read_bytes(), name
    assert (tmp_path / "c" / "stages").is_dir(), "the cache went where $CACHE_HOME/c names"
    assert not (elsewhere / "~").exists() and not (elsewhere / "$DATA").exists()


def test_a_relative_variable_is_relative_to_the_pipeline_file(rerank, tmp_path: Path) -> None:
    root = tmp_path / "project"
    workspace(root, {}, LOAD.replace("data/", "$DATA/"))
    result = rerank("run", root / "p.yaml", "-q", env={"DATA": "data"}, cwd=tmp_path)
    assert result.code == 0, result.err
    assert (root / "out" / "given.trec").read_bytes() == RUN


def test_model_and_prompt_paths_under_home_validate(rerank, tmp_path: Path) -> None:
    """``model: ~/model`` and ``prompt: ~/t.yaml``: the folder and template under HOME are the ones read."""
    workspace(tmp_path, {"t.yaml": template()}, listwise(", prompt: ~/t.yaml").replace("./model", "~/model"))
    result = rerank("validate", tmp_path / "p.yaml", env={"HOME": str(tmp_path)}, cwd=tmp_path)
    assert result.code == 0, result.err
    (tmp_path / "t.yaml").write_bytes(template(system=["a list"]))  # now the same file is read, and refused
    refused = rerank("validate", tmp_path / "p.yaml", env={"HOME": str(tmp_path)}, cwd=tmp_path)
    assert_user_error(refused, f"{tmp_path}/t.yaml:1:", "field 'system' must be text")


def test_tilde_and_variables_in_options_read_the_named_files(rerank, tmp_path: Path) -> None:
    workspace(tmp_path, {}, LOAD)
    plain = rerank("eval", tmp_path / "data" / "given.trec", "--qrels", tmp_path / "data" / "qrels.txt")
    env = {"HOME": str(tmp_path), "RUNS": str(tmp_path / "data")}
    expanded = rerank("eval", "$RUNS/given.trec", "--qrels", "~/data/qrels.txt", env=env, cwd=tmp_path / "model")
    assert expanded.code == 0 and plain.code == 0, expanded.err
    assert expanded.out == plain.out
    compared = rerank("compare", "a=${RUNS}/given.trec", "b=~/data/given.trec", "--qrels", "$RUNS/qrels.txt",
                      "-m", "map", env=env, cwd=tmp_path / "model")
    assert compared.code == 0, compared.err
    cached = rerank("run", "~/p.yaml", "--cache-dir", "~/my-cache", "-q", env=env, cwd=tmp_path / "model")
    assert cached.code == 0, cached.err
    assert (tmp_path / "my-cache" / "stages").is_dir() and (tmp_path / "out" / "given.trec").is_file()


def test_double_dollar_is_a_literal_dollar(rerank, tmp_path: Path) -> None:
    workspace(tmp_path, {"data/a$b.trec": RUN}, LOAD)
    result = rerank("eval", "data/a$$b.trec", "--qrels", "data/qrels.txt", "-m", "map", cwd=tmp_path)
    assert result.code == 0, result.err
    assert "a$b.trec" in result.out


def test_force_all_names_a_stage_called_all_when_there_is_one(rerank, tmp_path: Path) -> None:
    """`--force all` recomputes every stage, unless a stage is named `all`: then that stage alone."""
    root = tmp_path.resolve()
    workspace(root, {}, LOAD_ONLY + "  - {name: all, type: load, run: data/given.trec}\n")
    assert rerank("run", root / "p.yaml", cwd=root).code == 0
    again = rerank("run", root / "p.yaml", "--force", "all", cwd=root)
    assert again.code == 0, again.err
    assert "[given] cached" in again.err and "[all] running" in again.err, again.err
