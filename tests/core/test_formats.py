"""Corpus, queries and qrels readers: every supported layout, and errors that name the line."""

import json
from pathlib import Path

import pytest

from rerankcli.core.errors import UserError
from rerankcli.core.formats import read_corpus, read_qrels, read_queries


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_beir_corpus_keeps_order_titles_and_text(tmp_path: Path) -> None:
    path = write(tmp_path / "corpus.jsonl", "\n".join(json.dumps(d) for d in [
        {"_id": "d1", "title": "T", "text": "one"}, {"_id": "d2", "text": "two"}]) + "\n")
    corpus = read_corpus(path)
    assert corpus.ids == ["d1", "d2"]
    assert corpus.contents(0) == "T one"
    assert corpus.contents(1) == "two"


def test_tsv_corpus_with_and_without_titles(tmp_path: Path) -> None:
    assert read_corpus(write(tmp_path / "c.tsv", "d1\tsome text\n")).texts == ["some text"]
    corpus = read_corpus(write(tmp_path / "c3.tsv", "d1\tA title\tsome text\n"))
    assert (corpus.titles, corpus.texts) == (["A title"], ["some text"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"title": "x", "text": "y"}\n', ":1: missing field '_id'"),
        ('{"_id": "a", "text": "y"}\n{"_id": "a", "text": "z"}\n', ":2: duplicate document id 'a', first on line 1"),
        ('{"_id": "a", "text": "y"}\n{"_id": "b", "text": 3}\n', ":2: field 'text' must be a string"),
        ('{"_id": "a", "text": "y"}\n{not json}\n', ":2: invalid JSON"),
        ("", "the corpus file has no documents"),
    ],
)
def test_corpus_errors_name_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = write(tmp_path / "corpus.jsonl", content)
    with pytest.raises(UserError) as error:
        read_corpus(path)
    assert str(path) in str(error.value) and message in str(error.value)


def test_invalid_utf8_in_corpus_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b'{"_id": "a", "text": "ok"}\n{"_id": "b", "text": "\xff"}\n')
    with pytest.raises(UserError, match=r"corpus.jsonl:2: not valid UTF-8"):
        read_corpus(path)


def test_queries_from_jsonl_and_tsv(tmp_path: Path) -> None:
    jsonl = write(tmp_path / "q.jsonl", '{"_id": "1", "text": "what is bm25"}\n')
    tsv = write(tmp_path / "q.tsv", "1\twhat is bm25\n")
    assert read_queries(jsonl) == read_queries(tsv) == {"1": "what is bm25"}


def test_empty_query_text_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"q.tsv:2: query '2' has empty text"):
        read_queries(write(tmp_path / "q.tsv", "1\tfine\n2\t  \n"))


def test_trec_and_beir_qrels_read_the_same(tmp_path: Path) -> None:
    trec = write(tmp_path / "qrels.txt", "q1 0 d1 2\nq1 0 d2 0\n")
    beir = write(tmp_path / "test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\n")
    assert read_qrels(trec) == read_qrels(beir) == {"q1": {"d1": 2, "d2": 0}}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("q1 0 d1 2\nq1 0 d2\n", ":2: expected 4 columns like the first line, found 3"),
        ("q1 0 d1 high\n", ":1: relevance 'high' is not an integer"),
        ("q1 0 d1 1\nq1 0 d1 2\n", ":2: duplicate judgement of document d1 for query q1"),
        ("q1 d1\n", ":1: qrels need 4 columns"),
    ],
)
def test_qrels_errors_name_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = write(tmp_path / "qrels.txt", content)
    with pytest.raises(UserError) as error:
        read_qrels(path)
    assert message in str(error.value)
