"""Corpus, queries and qrels readers: every supported layout, errors that name the line, and the
opener they share (regular files only, bounded memory whatever the input)."""

import errno
import gzip
import json
import os
import random
import signal
import socket
from contextlib import contextmanager
from pathlib import Path

import pytest

from rerankcli.core import user_files
from rerankcli.core.errors import UserError
from rerankcli.core.formats import read_corpus, read_qrels, read_queries
from rerankcli.core.runs import read_run
from rerankcli.core.user_files import check_regular, numbered_lines, read_text


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


# -- the opener every reader of a user's file goes through (core.user_files) -------------------

@contextmanager
def within(seconds: int):
    """Fail instead of hanging: a reader that opened a FIFO would wait for a writer forever."""
    def expired(signum, frame):
        raise TimeoutError(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def refusal(path: Path, what: str = "run") -> str:
    with within(10), pytest.raises(UserError) as error:
        list(numbered_lines(path, what))
    return str(error.value)


def test_a_fifo_is_refused_by_its_kind_without_waiting_for_a_writer(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    assert refusal(tmp_path / "pipe") == f"{tmp_path / 'pipe'}: expected a run file, found a FIFO (named pipe)"


def test_a_character_device_and_a_link_to_it_are_refused(tmp_path: Path) -> None:
    (tmp_path / "zero").symlink_to("/dev/zero")
    assert refusal(Path("/dev/zero"), "qrels") == "/dev/zero: expected a qrels file, found a character device"
    assert refusal(tmp_path / "zero", "qrels").endswith("zero: expected a qrels file, found a character device")


def test_a_directory_a_socket_a_link_loop_and_a_dangling_link_are_refused(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    server = socket.socket(socket.AF_UNIX)
    here = os.getcwd()
    os.chdir(tmp_path)  # socket paths are limited to ~100 bytes: bind a relative one
    try:
        server.bind("sock")
    finally:
        os.chdir(here)
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    try:
        assert refusal(tmp_path / "folder").endswith("expected a run file, found a directory")
        assert refusal(tmp_path / "sock").endswith("expected a run file, found a socket")
        assert refusal(tmp_path / "loop").endswith("expected a run file, found a symbolic link loop")
        assert refusal(tmp_path / "dangling").endswith("run file not found (a symbolic link to "
                                                       f"'{tmp_path / 'nowhere'}', which does not exist)")
        assert refusal(tmp_path / "absent").endswith("absent: run file not found")
        assert refusal(tmp_path / "absent" / "deeper").endswith("run file not found")
    finally:
        server.close()


def test_a_link_to_a_regular_file_reads_as_the_file(tmp_path: Path) -> None:
    write(tmp_path / "real.trec", "q1 Q0 d1 1 1.0 t\n")
    (tmp_path / "link.trec").symlink_to(tmp_path / "real.trec")
    assert read_run(tmp_path / "link.trec") == read_run(tmp_path / "real.trec")
    assert check_regular(tmp_path / "link.trec", "run").st_size == 17


def test_permission_denied_is_the_os_error_with_its_path_not_bad_input(tmp_path: Path, monkeypatch) -> None:
    """Exit 75 (a resource fault), not 2: the OSError goes up with its errno and the path."""
    path = write(tmp_path / "r.trec", "q1 Q0 d1 1 1.0 t\n")

    def denied(name, flags, *args):
        raise PermissionError(errno.EACCES, "Permission denied", str(name))

    monkeypatch.setattr(user_files.os, "open", denied)
    with pytest.raises(PermissionError) as error:
        read_run(path)
    assert error.value.errno == errno.EACCES and error.value.filename == str(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files of mode 000")
def test_a_file_of_mode_000_is_permission_denied(tmp_path: Path) -> None:
    path = write(tmp_path / "qrels.txt", "q1 0 d1 1\n")
    path.chmod(0)
    with pytest.raises(PermissionError) as error:
        read_qrels(path)
    assert error.value.filename == str(path)


def test_a_line_longer_than_the_cap_stops_at_the_cap(tmp_path: Path) -> None:
    path = write(tmp_path / "r.trec", "short\n" + "x" * 5000 + "\nafter\n")
    with pytest.raises(UserError, match=r"r.trec:2: line 2 is longer than .* MiB; a run file holds one record per line"):
        list(numbered_lines(path, "run", max_line=4096))
    assert [n for n, _ in numbered_lines(path, "run", max_line=5000)] == [1, 2, 3]


def test_a_sparse_file_without_a_line_break_is_refused_after_reading_only_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "huge.trec"
    with open(path, "wb") as handle:
        handle.truncate(1 << 30)  # 1 GiB of zeros, no line break, no disk used
    with within(20), pytest.raises(UserError, match=r"huge.trec:1: line 1 is longer than 32 MiB"):
        read_run(path)


@pytest.mark.parametrize("block", [1, 2, 3, 7, 64, 1 << 20])
def test_lines_split_across_blocks_read_as_whole_lines(tmp_path: Path, monkeypatch, block: int) -> None:
    """Lines, CRLF ends, multi-byte characters and a byte-order mark cut at any block boundary."""
    rng = random.Random(block)
    pieces = ["q1", "é", "日本", "𝄞", " ", "\t", "\r\n", "\n", "\n\n", "x" * 20, "\u2028", "\x0c"]
    text = "\ufeff" + "".join(rng.choice(pieces) for _ in range(400)) + "tail"
    path = tmp_path / "f.txt"
    path.write_bytes(text.encode("utf-8"))
    monkeypatch.setattr(user_files, "BLOCK_BYTES", block)
    expected = [line.removesuffix("\r") for line in text[1:].split("\n")]
    assert list(numbered_lines(path, "data")) == list(enumerate(expected, start=1))


@pytest.mark.parametrize("block", [1, 5, 1 << 20])
def test_invalid_utf8_names_its_line_and_byte_whatever_the_block(tmp_path: Path, monkeypatch, block: int) -> None:
    path = tmp_path / "q.tsv"
    path.write_bytes("1\tcafé\n2\tok\n3\tbad \xff here\n".encode("latin-1").replace(b"caf\xe9", "café".encode()))
    monkeypatch.setattr(user_files, "BLOCK_BYTES", block)
    with pytest.raises(UserError, match=r"q.tsv:3: not valid UTF-8 text \(byte 19\)"):
        list(numbered_lines(path, "queries"))


def test_a_character_cut_by_the_end_of_the_file_is_invalid_on_the_last_line(tmp_path: Path) -> None:
    path = tmp_path / "q.tsv"
    path.write_bytes(b"1\tok\n2\tcut " + "é".encode()[:1])
    with pytest.raises(UserError, match=r"q.tsv:2: not valid UTF-8 text \(byte 11\)"):
        read_queries(path)


def test_gzip_files_stream_like_plain_ones(tmp_path: Path) -> None:
    content = "q1 Q0 d1 1 2.0 t\r\nq1 Q0 d2 2 1.0 t\n\nq2 Q0 d1 1 0.5 t\n"
    plain = write(tmp_path / "r.trec", content)
    packed = tmp_path / "r.trec.gz"
    packed.write_bytes(gzip.compress(content.encode()))
    assert read_run(packed) == read_run(plain)
    assert list(numbered_lines(packed, "run")) == list(numbered_lines(plain, "run"))


def test_a_truncated_or_fake_gzip_is_one_line(tmp_path: Path) -> None:
    truncated = tmp_path / "qrels.txt.gz"
    judgements = "".join(f"q1 0 d{i} 1\n" for i in range(1000)).encode()
    truncated.write_bytes(gzip.compress(judgements)[:-20])  # cut short: no end-of-stream marker
    with pytest.raises(UserError, match=r"qrels.txt.gz: not a readable gzip file"):
        read_qrels(truncated)
    fake = tmp_path / "corpus.jsonl.gz"
    fake.write_bytes(b'{"_id": "d1", "text": "plain"}\n')
    with pytest.raises(UserError, match=r"corpus.jsonl.gz: not a readable gzip file"):
        read_corpus(fake)


def test_a_gzip_bomb_stops_at_the_line_cap_not_at_the_end_of_the_stream(tmp_path: Path) -> None:
    bomb = tmp_path / "corpus.jsonl.gz"
    with gzip.open(bomb, "wb") as handle:
        for _ in range(48):  # 48 MiB of one line, a few hundred kB on disk
            handle.write(b"a" * (1 << 20))
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(UserError, match=r"corpus.jsonl.gz:1: line 1 is longer than 32 MiB"):
        read_corpus(bomb)


def test_whole_file_reads_are_capped(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", "# " + "x" * 100 + "\n")
    assert read_text(path, "pipeline", limit=103) == "# " + "x" * 100 + "\n"
    with pytest.raises(UserError, match=r"p.yaml: the pipeline file is larger than .* MiB"):
        read_text(path, "pipeline", limit=102)


def test_duplicates_name_their_first_line_without_a_map_of_every_line(tmp_path: Path) -> None:
    run = write(tmp_path / "r.trec", "q1 Q0 a 1 3 t\nq2 Q0 a 1 3 t\n\nq1 Q0 b 2 2 t\nq1 Q0 a 3 1 t\n")
    with pytest.raises(UserError, match=r"r.trec:5: duplicate \(query q1, document a\), first seen on line 1"):
        read_run(run)
    qrels = write(tmp_path / "qrels.txt", "q1 0 a 1\nq2 0 a 1\nq2 0 a 0\n")
    with pytest.raises(UserError, match=r"qrels.txt:3: duplicate judgement of document a for query q2, first on line 2"):
        read_qrels(qrels)
    queries = write(tmp_path / "q.tsv", "1\tone\n2\ttwo\n2\tagain\n")
    with pytest.raises(UserError, match=r"q.tsv:3: duplicate query id '2', first on line 2"):
        read_queries(queries)


def test_a_line_separator_inside_a_json_string_does_not_split_the_record(tmp_path: Path) -> None:
    """JSON allows U+2028 raw in strings; only a line feed ends a JSONL record."""
    path = write(tmp_path / "corpus.jsonl", '{"_id": "d1", "text": "one\u2028two\x85three"}\n')
    assert read_corpus(path).texts == ["one\u2028two\x85three"]


def test_an_io_error_while_reading_goes_up_with_the_path(tmp_path: Path, monkeypatch) -> None:
    """A disk that fails mid-read is a resource fault (exit 75) whose one line names the file."""
    path = write(tmp_path / "qrels.txt", "q1 0 d1 1\n")

    class Failing:
        def __init__(self, handle):
            self.handle = handle

        def read(self, size=-1):
            raise OSError(errno.EIO, "Input/output error")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    opened = user_files.open_regular
    monkeypatch.setattr(user_files, "open_regular", lambda p, what: Failing(opened(p, what)))
    with pytest.raises(OSError) as error:
        read_qrels(path)
    assert error.value.errno == errno.EIO and error.value.filename == str(path)


@pytest.mark.parametrize(("name", "line", "message"), [
    ("corpus.jsonl", "[" * 100_000, ":2: JSON nested too deeply (a line of a corpus file is one flat object)"),
    ("corpus.jsonl", '{"_id": "b", "text": ' + '{"a": ' * 100_000, ":2: JSON nested too deeply"),
    ("corpus.jsonl", '{"_id": ' + "1" * 5000 + ', "text": "x"}', ":2: invalid JSON (Exceeds the limit (4300 digits)"),
    ("queries.jsonl", "[" * 100_000, ":2: JSON nested too deeply (a line of a queries file is one flat object)"),
])
def test_json_lines_past_what_the_parser_takes_name_file_and_line(tmp_path: Path, name: str, line: str,
                                                                   message: str) -> None:
    """``json`` raises RecursionError for ``[[[[…`` 100000 deep and a bare ValueError for an
    integer of 5000 digits, neither a JSONDecodeError: both are one line, not a traceback."""
    path = write(tmp_path / name, '{"_id": "a", "text": "fine"}\n' + line + "\n")
    reader = read_corpus if name.startswith("corpus") else read_queries
    with pytest.raises(UserError) as error:
        reader(path)
    assert str(error.value).startswith(str(path)) and message in str(error.value)


@pytest.mark.parametrize(("value", "message"), [
    ("2024-13-45", ":2: cannot read '2024-13-45' (month must be in 1..12); quote it to make it text"),
    ("1" * 5000, ":2: cannot read '1111"),
    ("!!timestamp 2024-02-30", ":2: cannot read '2024-02-30' (day is out of range for month)"),
])
def test_a_yaml_scalar_that_cannot_be_built_names_its_line(tmp_path: Path, value: str, message: str) -> None:
    """PyYAML raises a bare ValueError (no line) for a date that is no date or an integer of
    5000 digits; the pipeline loader makes it one line at the value."""
    from rerankcli.core.yaml_source import load_yaml

    path = write(tmp_path / "p.yaml", f"name: x\nwhen: {value}\n")
    with pytest.raises(UserError) as error:
        load_yaml(path)
    assert str(error.value).startswith(str(path)) and message in str(error.value)
