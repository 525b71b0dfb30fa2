"""The journal of an LLM stage is read like a shard file: damage is never data.

A journal (``<cache>/journals/<key>.jsonl``) holds the results a resumed stage writes into its
run, so its lines go through the parser and validator shard files go through
(``execution.results_format``). Unlike a shard file (the user's hand-off: one error line),
a journal is the cache's scratch file: a bad line is cut off with one warning line naming the
journal and line, and the queries from there on are computed again.

First the parser and validator as units, then the journal, then the real CLI: a tiny random
Llama reranks three demo queries, is stopped by SIGTERM after two (``$RERANK_FAULTS``), its
journal is damaged the ways a hostile review did, and the rerun must exit 0 with one warning
and write the run of an uninterrupted job, byte for byte.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rerankcli.core.errors import UserError
from rerankcli.execution.journal import Journal, header
from rerankcli.execution.results_format import BadLine, parse, placement_problem, read_result, read_results
from rerankcli.execution.shard import Shard, read_shard
from rerankcli.llm.accounting import Usage
from rerankcli.rerank.llm_method import QueryResult
from tests.conftest import DEMO

USAGE = {"requests": {"Continuation": 2}, "prompt_tokens": 9, "generated_tokens": 0, "truncated_passages": 0,
         "truncated_prompts": 0, "cache_hits": 0}


def item(qid: str = "q1", **fields: object) -> dict:
    """One query's line as the journal writes it, with ``fields`` replaced."""
    return {"qid": qid, "scores": {"d1": 1.0, "d2": 0.5}, "record": {"windows": 1}, "usage": USAGE, "by": "t:1",
            **fields}


def result(*docs: str, record: dict | None = None) -> QueryResult:
    return QueryResult({d: float(i) for i, d in enumerate(docs)}, record or {"windows": 1}, Usage(prompt_tokens=3))


# -- the parser -------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, fragment", [
    (b"[" * 100_000 + b"\n", "JSON nested too deeply"),
    (b'{"a": ' * 100_000 + b"\n", "JSON nested too deeply"),
    (b'{"qid": "caf\xe9"}\n', "not valid UTF-8"),
    (b"{qid: q1}\n", "not valid JSON (Expecting property name"),
    (b"1" * 5000 + b"\n", "not valid JSON (Exceeds the limit (4300 digits)"),
])
def test_a_line_that_is_no_json_value_is_a_bad_line(raw: bytes, fragment: str) -> None:
    with pytest.raises(BadLine) as caught:
        parse(raw)
    assert fragment in str(caught.value)


@pytest.mark.parametrize("line, fragment", [
    ({"foo": 1}, "missing field 'qid'"),
    ([1, 2], "expected a JSON object (one query's result), found list"),
    (item(note="x"), "unknown field 'note'"),
    (item(scores="x"), "field 'scores' must map document ids to scores"),
    (item(scores={}), "field 'scores' must map document ids to scores"),
    (item(scores={"d1": float("nan")}), "the score of document 'd1' is not finite (nan)"),
    (item(scores={"d1": float("-inf")}), "the score of document 'd1' is not finite"),
    (item(scores={"d1": 10**400}), "the score of document 'd1' is not finite"),
    (item(scores={"d1": "1.0"}), "the score of document 'd1' is not a number: '1.0'"),
    (item(scores={"d1": None}), "is not a number: None"),
    (item(scores={"d 1": 1.0}), "document id 'd 1' contains white space"),
    (item(scores={"d\udce9": 1.0}), "is not valid Unicode text"),
    (item(qid=7), "field 'qid' must be a non-empty string, found 7"),
    (item(qid=""), "field 'qid' must be a non-empty string"),
    (item(record=[1]), "field 'record' must be a JSON object"),
    (item(by=None), "field 'by' must be a string"),
    (item(usage={"requests": {}}), "field 'usage' must hold exactly requests"),
    (item(usage={**USAGE, "prompt_tokens": 1.5}), "'usage.prompt_tokens' must be a count"),
    (item(usage={**USAGE, "requests": {"Continuation": -1}}), "'usage.requests' must map request kinds to counts"),
])
def test_a_result_of_the_wrong_shape_is_a_bad_line(line: object, fragment: str) -> None:
    with pytest.raises(BadLine) as caught:
        read_result(line)
    assert fragment in str(caught.value)


def test_a_well_formed_result_reads_as_floats() -> None:
    qid, read = read_result(item(scores={"d1": 2, "d2": 0.5}))
    assert qid == "q1" and read.scores == {"d1": 2.0, "d2": 0.5} and isinstance(read.scores["d1"], float)
    assert read.usage.prompt_tokens == 9 and read.usage.requests == {"Continuation": 2}


# -- where a result belongs ---------------------------------------------------------------------------

CANDIDATES = {"q01": ["a", "b"], "q02": ["c", "d"]}


def test_a_query_not_in_the_input_run_is_said_so_before_its_shard() -> None:
    """q99 hashes to shard 0 of 2; checked as shard 1 of 2, the line must still say what is wrong."""
    problem = placement_problem("q99", result("a"), "llm", (1, 2), CANDIDATES)
    assert problem == "query 'q99' is not a query of the input run of stage 'llm'"


def test_a_query_of_another_shard_names_its_shard() -> None:
    assert placement_problem("q01", result("a", "b"), "llm", (1, 2), None) == (
        "query 'q01' belongs to shard 0/2, not 1/2 (a query id decides its shard)")


def test_a_result_must_score_exactly_its_candidates() -> None:
    assert "document 'NOTADOC' was not one of its 2 candidates" in placement_problem(
        "q01", result("a", "b", "NOTADOC"), "llm", None, CANDIDATES)
    assert "candidate 'b' has no score (1 of 2 lack one)" in placement_problem(
        "q01", result("a"), "llm", None, CANDIDATES)
    assert placement_problem("q01", result("b", "a"), "llm", (0, 2), CANDIDATES) is None


# -- the journal -----------------------------------------------------------------------------------------

def journal_of(path: Path, qids: list[str], **options) -> Journal:
    journal = Journal(path, header("llm", "k"), **options)
    journal.note_prepared(None)
    for qid in qids:
        journal.add(qid, result("a", "b"))
    return journal


def damage(path: Path, number: int, text: str) -> bytes:
    """Replace line ``number`` of ``path`` with ``text``; returns the bytes before that line."""
    lines = path.read_bytes().splitlines(keepends=True)
    before = b"".join(lines[:number - 1])
    lines[number - 1] = text.encode() + b"\n"
    path.write_bytes(b"".join(lines))
    return before


@pytest.mark.parametrize("text", ['{"foo": 1}', "[" * 100_000, json.dumps(item("q2", scores="x")),
                                  json.dumps(item("q2", scores={"a": float("nan"), "b": 1.0}))])
def test_a_damaged_line_cuts_the_journal_with_one_warning(tmp_path: Path, text: str) -> None:
    path = tmp_path / "j.jsonl"
    journal_of(path, ["q1", "q2", "q3"])
    before = damage(path, 4, text)  # header, prepared, q1, then q2's line
    warnings: list[str] = []
    again = Journal(path, header("llm", "k"), warn=warnings.append)
    assert list(again.results) == ["q1"]
    assert len(warnings) == 1 and f"{path}:4: " in warnings[0] and "cut there" in warnings[0], warnings
    assert path.read_bytes() == before  # q2 and q3 are computed again, and appended after q1
    again.add("q2", result("a", "b"))
    assert list(Journal(path, header("llm", "k"), warn=warnings.append).results) == ["q1", "q2"]
    assert len(warnings) == 1


def test_a_result_scoring_a_document_that_was_no_candidate_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal_of(path, ["q01"])
    with open(path, "a") as handle:
        handle.write(json.dumps({**result("c", "d", "NOTADOC").line("q02")}) + "\n")
    warnings: list[str] = []
    again = Journal(path, header("llm", "k"), candidates={"q01": ["a", "b"], "q02": ["c", "d"]},
                    warn=warnings.append)
    assert list(again.results) == ["q01"]
    assert len(warnings) == 1 and f"{path}:4: query 'q02': document 'NOTADOC' was not one of" in warnings[0]


def test_a_result_of_a_query_not_in_the_input_run_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal_of(path, ["q01", "q77"])
    warnings: list[str] = []
    again = Journal(path, header("llm", "k"), candidates={"q01": ["a", "b"]}, warn=warnings.append)
    assert list(again.results) == ["q01"]
    assert "query 'q77' is not a query of the input run of stage 'llm'" in warnings[0]


def test_a_shard_journal_cuts_a_query_of_another_shard(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    head = header("llm", "k", "1/2")
    journal = Journal(path, head)
    for qid in ("q02", "q01", "q03"):  # q01 hashes to shard 0
        journal.add(qid, result("a", "b"))
    warnings: list[str] = []
    assert list(Journal(path, head, warn=warnings.append).results) == ["q02"]
    assert f"{path}:3: query 'q01' belongs to shard 0/2, not 1/2" in warnings[0]


def test_a_record_unlike_the_first_is_cut(tmp_path: Path) -> None:
    """A method adds its records up at the end: a record lacking a field would stop it with a KeyError."""
    path = tmp_path / "j.jsonl"
    journal = journal_of(path, ["q1"])
    journal.add("q2", result("a", "b", record={"windows": "many"}))
    warnings: list[str] = []
    assert list(Journal(path, header("llm", "k"), warn=warnings.append).results) == ["q1"]
    assert "query 'q2': its record has fields {'windows': 'str'}, unlike query 'q1'" in warnings[0]


def test_a_damaged_header_starts_the_journal_again(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal_of(path, ["q1"])
    damage(path, 1, "[" * 100_000)
    warnings: list[str] = []
    again = Journal(path, header("llm", "k"), warn=warnings.append)
    assert again.results == {} and len(warnings) == 1 and f"{path}:1: JSON nested too deeply" in warnings[0]
    assert path.read_text() == json.dumps(header("llm", "k")) + "\n"


def test_a_torn_last_line_is_dropped_without_a_warning(tmp_path: Path) -> None:
    """A kill mid-write is what journals are for: no warning, only the torn query again."""
    path = tmp_path / "j.jsonl"
    journal_of(path, ["q1"])
    with open(path, "ab") as handle:
        handle.write(b'{"qid": "q2", "scores": {"a')
    warnings: list[str] = []
    assert list(Journal(path, header("llm", "k"), warn=warnings.append).results) == ["q1"]
    assert warnings == []


def test_a_method_without_prepared_state_notes_it_once_across_resumes(tmp_path: Path) -> None:
    """Noting ``null`` again on every resume left a second 'prepared' line after the results,
    which a shard file copied from such a journal was refused for."""
    path = tmp_path / "j.jsonl"
    journal_of(path, ["q02"])
    resumed = Journal(path, header("llm", "k", None))
    resumed.note_prepared(None)
    resumed.add("q03", result("a", "b"))
    assert path.read_text().count('"prepared"') == 1


def test_a_shard_file_from_a_resumed_journal_of_earlier_versions_is_read(tmp_path: Path) -> None:
    """Journals written before the fix hold the same ``null`` state twice: that is no damage."""
    shard = Shard(1, 2)
    path = tmp_path / "llm.1-of-2.jsonl"
    lines = [header("llm", "k", "1/2"), {"prepared": None}, result("a", "b").line("q02"), {"prepared": None},
             result("a", "b").line("q03")]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert list(read_shard(path, shard).results) == ["q02", "q03"]


def test_a_second_prepared_state_that_differs_is_damage(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = journal_of(path, ["q1"])
    journal._write({"prepared": {"yes": ["Yes"]}})
    contents = read_results(path, "journal")
    assert list(contents.results) == ["q1"] and f"{path}:4: a second 'prepared' line that differs" in contents.damage


# -- --shard ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, fragment", [
    ("1/0", "--shard 1/0: the number of shards N in i/N must be at least 1"),
    ("0/0", "must be at least 1"),
    ("2/2", "--shard 2/2: the index counts from 0 and must be below the number of shards (0/2 to 1/2)"),
    ("1/1", "below the number of shards (0/1)"),
    ("a/2", "write it as i/N"),
])
def test_a_shard_outside_its_split_says_why(text: str, fragment: str) -> None:
    with pytest.raises(UserError) as caught:
        Shard.parse(text)
    assert fragment in str(caught.value)


# -- through the CLI: a job stopped after two queries, its journal damaged, run again --------------------

#: with depth 2 the candidates are q01: try, assert; q02: yield, try; q03: assert, try
RUN = (b"q01 Q0 try 1 3.0 given\nq01 Q0 assert 2 2.0 given\nq01 Q0 yield 3 1.0 given\n"
       b"q02 Q0 yield 1 1.5 given\nq02 Q0 try 2 1.0 given\n"
       b"q03 Q0 assert 1 1.0 given\nq03 Q0 try 2 0.5 given\n")


def pipeline(model: Path) -> str:
    return ("name: journal\n"
            f"dataset: {{corpus: {DEMO}/corpus.jsonl, queries: {DEMO}/queries.tsv, qrels: {DEMO}/qrels.txt}}\n"
            "output: out\ncache: cache\nstages:\n"
            "  - {name: given, type: load, run: given.trec}\n"
            f"  - {{name: llm, type: rerank, method: query-likelihood, model: {model}, depth: 2, batch_size: 1,\n"
            "     backend: {type: hf, chat: false}}\n")


def rerank(root: Path, faults: str = "", *options: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RERANK_FAULTS": faults}
    return subprocess.run([sys.executable, "-m", "rerankcli", "run", "p.yaml", *options], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def stopped(tiny_llama, tmp_path_factory) -> tuple[Path, bytes]:
    """A workspace whose LLM stage was stopped by SIGTERM as its third query was journaled
    (header, prepared state, q01, q02, then q03 half-written), and the run of an uninterrupted job."""
    reference = tmp_path_factory.mktemp("uninterrupted")
    root = tmp_path_factory.mktemp("stopped")
    for folder in (reference, root):
        (folder / "given.trec").write_bytes(RUN)
        (folder / "p.yaml").write_text(pipeline(tiny_llama))
    done = rerank(reference)
    assert done.returncode == 0, done.stderr
    stopped = rerank(root, "SIGTERM@journal:*#5")
    assert stopped.returncode == 130, stopped.stderr
    assert "stage 'llm': 2 queries journaled" in stopped.stderr
    return root, (reference / "out" / "llm.trec").read_bytes()


def edited(line: dict, case: str) -> str:
    if case == "a document that was not a candidate":
        return json.dumps({**line, "scores": {**line["scores"], "NOTADOC": 1e9}})
    if case == "an object without the result's fields":
        return '{"foo": 1}'
    if case == "scores that are text":
        return json.dumps({**line, "scores": "x"})
    if case == "a line nested 100000 deep":
        return "[" * 100_000
    if case == "a NaN score":
        return json.dumps({**line, "scores": {docid: float("nan") for docid in line["scores"]}})
    raise KeyError(case)


@pytest.mark.parametrize("case, number, options", [
    ("a document that was not a candidate", 3, ()), ("an object without the result's fields", 3, ()),
    ("scores that are text", 3, ()), ("a line nested 100000 deep", 3, ()),
    ("a NaN score", 4, ("-q",))])  # damage to the cache is shown even with -q, like a damaged entry
def test_a_damaged_journal_is_cut_and_the_rerun_writes_the_uninterrupted_run(stopped, tmp_path: Path, case: str,
                                                                           number: int, options: tuple) -> None:
    root = tmp_path / "ws"
    shutil.copytree(stopped[0], root)
    (journal,) = (root / "cache" / "journals").glob("*.jsonl")
    lines = journal.read_text().split("\n")
    lines[number - 1] = edited(json.loads(lines[number - 1]), case)
    journal.write_text("\n".join(lines))
    result = rerank(root, "", *options)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "error:" not in result.stderr
    warnings = [line for line in result.stderr.splitlines() if "damaged journal line" in line]
    assert len(warnings) == 1 and warnings[0].startswith(f"[llm] damaged journal line {journal}:{number}: "), \
        result.stderr
    assert len(warnings[0]) < 400
    assert (root / "out" / "llm.trec").read_bytes() == stopped[1]  # NOTADOC nowhere; every score finite
    manifest = json.loads((root / "out" / "llm.manifest.json").read_text())
    assert manifest["details"]["restored_queries"] == number - 3  # the queries before the damaged line
    kept = (root / "cache" / "stages" / manifest["key"] / "queries.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["qid"] for line in kept[2:]) == ["q01", "q02", "q03"]
    assert not list((root / "cache" / "journals").glob("*.jsonl"))
