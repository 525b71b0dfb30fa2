"""Progress: a redrawn bar on a terminal, plain lines (rate and ETA) in batch logs."""

import io

from rerankcli.core.progress import Progress


class FakeStream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_terminal_gets_a_redrawn_bar_with_rate_and_eta() -> None:
    stream = FakeStream(tty=True)
    progress = Progress("bm25", 10, stream=stream)
    progress.last = -1e9  # as if the last redraw were long ago
    progress.update(5)
    progress.close()
    text = stream.getvalue()
    assert text.startswith("\rbm25: [##########") and "5/10 (50%)" in text and "ETA" in text
    assert text.endswith("\n")


def test_batch_logs_get_whole_lines_without_carriage_returns() -> None:
    stream = FakeStream(tty=False)
    progress = Progress("encode", 4, stream=stream)
    progress.last = -1e9
    progress.update(2)
    assert stream.getvalue() == stream.getvalue().lstrip("\r")
    assert stream.getvalue().startswith("encode: 2/4 (50%)") and stream.getvalue().endswith("\n")


def test_disabled_progress_writes_nothing() -> None:
    stream = FakeStream(tty=True)
    progress = Progress("x", 3, enabled=False, stream=stream)
    progress.update(3)
    progress.close()
    assert stream.getvalue() == ""
