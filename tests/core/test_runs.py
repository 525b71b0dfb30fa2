"""TREC run files: canonical order, byte-identical writing, strict reading."""

from pathlib import Path

import pytest

from rerankcli.core.errors import UserError
from rerankcli.core.runs import Run, read_run, write_run


def test_written_runs_sort_by_qid_then_score_then_docid_descending(tmp_path: Path) -> None:
    run = Run({"q2": {"a": 1.0}, "q1": {"b": 0.5, "c": 2.0, "d": 0.5}})
    write_run(run, tmp_path / "r.trec", tag="t")
    lines = (tmp_path / "r.trec").read_text().splitlines()
    assert lines == [
        "q1 Q0 c 1 2.0 t",
        "q1 Q0 d 2 0.5 t",  # equal scores: docid descending, the order trec_eval evaluates
        "q1 Q0 b 3 0.5 t",
        "q2 Q0 a 1 1.0 t",
    ]


def test_equal_runs_are_byte_identical_whatever_the_insertion_order(tmp_path: Path) -> None:
    first = Run({"q": {"a": 1.0, "b": 1.0, "c": 0.25}})
    second = Run({"q": {"c": 0.25, "b": 1.0, "a": 1.0}})
    write_run(first, tmp_path / "1.trec")
    write_run(second, tmp_path / "2.trec")
    assert (tmp_path / "1.trec").read_bytes() == (tmp_path / "2.trec").read_bytes()


def test_round_trip_keeps_scores_exactly(tmp_path: Path) -> None:
    run = Run({"q": {"a": 0.1 + 0.2, "b": -1e-300, "c": 15.780599594116211}})
    write_run(run, tmp_path / "r.trec")
    assert read_run(tmp_path / "r.trec") == run


def test_bom_and_crlf_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "r.trec"
    path.write_bytes(b"\xef\xbb\xbfq Q0 a 1 2.5 t\r\nq Q0 b 2 1.5 t\r\n")
    assert read_run(path).scores == {"q": {"a": 2.5, "b": 1.5}}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("q Q0 a 1 2.5\n", ":1: a TREC run line needs 6 columns"),
        ("q Q0 a 1 2.5 t\nq Q0 b one 2.0 t\n", ":2: rank 'one' is not an integer"),
        ("q Q0 a 1 high t\n", ":1: score 'high' is not a number"),
        ("q Q0 a 1 nan t\n", ":1: score 'nan' is not finite"),
        ("q Q0 a 1 2 t\nq Q0 b 2 1 t\nq Q0 a 3 0 t\n", ":3: duplicate (query q, document a), first seen on line 1"),
        ("", "the run file is empty"),
    ],
)
def test_malformed_runs_name_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.trec"
    path.write_text(content)
    with pytest.raises(UserError) as error:
        read_run(path)
    assert str(error.value).startswith(str(path))
    assert message in str(error.value)


def test_binary_garbage_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.trec"
    path.write_bytes(b"q Q0 a 1 2 t\n\xff\xfe\x00garbage\n")
    with pytest.raises(UserError, match=r"bad.trec:2: not valid UTF-8"):
        read_run(path)


def test_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="run file not found"):
        read_run(tmp_path / "absent.trec")


def test_top_keeps_the_first_k_in_rank_order() -> None:
    run = Run({"q": {"a": 3.0, "b": 2.0, "c": 1.0}})
    assert run.top(2).scores == {"q": {"a": 3.0, "b": 2.0}}
