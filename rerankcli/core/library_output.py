"""What libraries print during a run goes to ``<output>/rerank.log``, or nowhere with ``--quiet``.

transformers, huggingface_hub, sentence-transformers, vLLM, bm25s and Ray log through Python's
``logging``, raise warnings, draw tqdm bars, and write to stderr from Python, from C++ and from
the subprocesses they start (vLLM's engine core). During ``rerank run`` and ``rerank index`` the
terminal shows only rerank's own lines: stage messages and progress lines on stderr, written to
:func:`terminal`, and the metrics table on stdout. Inside :func:`library_output`:

- ``sys.stderr`` is a stream into the log (with ``quiet``: its in-memory tail), so what a library
  writes there, and every logging handler it creates during the run (transformers and vLLM add
  their own when first imported), ends up in the log;
- file descriptor 2 is a pipe into the log (``quiet``: its in-memory tail only), for what C++ code and
  subprocesses write; :func:`terminal` is a copy of the original descriptor, so our lines still
  reach the terminal, and it is restored before a failure's ``error:`` line is printed;
- loggers that already have handlers lose them and propagate to the root logger, whose one
  handler writes timestamped records (INFO and above) to the log;
- ``warnings.showwarning`` writes to the log;
- progress bars are off: ``TQDM_DISABLE`` and ``HF_HUB_DISABLE_PROGRESS_BARS`` (read when tqdm
  and huggingface_hub are imported, here or in a subprocess), transformers' and
  huggingface_hub's switches when they are imported already; a line that still looks like a bar
  is dropped;
- vLLM, which configures its logging when imported, logs to stderr (``VLLM_LOGGING_STREAM``),
  not to stdout where the metrics table goes.

Everything is restored on exit. The log file is created when its first line arrives (a run
that fails its checks leaves the output folder as it was), is appended to, starts each run's
part with a timestamped header, and is written line by line, so a crash leaves it readable.
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import datetime as dt
import io
import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ENVIRONMENT = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
               "VLLM_CONFIGURE_LOGGING": "1", "VLLM_LOGGING_STREAM": "ext://sys.stderr"}
BAR = re.compile(r"\d+%\|")  # tqdm's "desc:  42%|####      | 42/100"

_terminals: list[TextIO] = []  # where our lines go, for each active context (innermost last)


def terminal() -> TextIO:
    """Where rerank's own lines go: the terminal's stderr, also inside ``library_output``."""
    return _terminals[-1] if _terminals else sys.stderr


class LogFile:
    """A log file opened on the first line written (its folder and header too); ``path`` None: nowhere.

    The last lines are also kept in memory, log file or not, so a failure whose cause a library
    only logged ("Engine core initialization failed. See root cause above") can still be named
    in the one error line. A log that cannot be written (disk full) stops logging: libraries'
    chatter must not be what ends a run.
    """

    def __init__(self, path: Path | None, header: str = "") -> None:
        self.path, self.header = path, header
        self.written = False  # a line reached the file
        self.tail: collections.deque[str] = collections.deque(maxlen=400)
        self._file: TextIO | None = None
        self._broken = False
        self._lock, self._pid = threading.Lock(), os.getpid()

    def write(self, text: str) -> None:
        if not text:
            return
        if self._pid != os.getpid():  # a forked child: the parent's lock may have been held at the fork
            self._lock, self._pid = threading.Lock(), os.getpid()
        with self._lock:
            self.tail.extend(text.splitlines())
            if self.path is None or self._broken:
                return
            try:
                if self._file is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._file = open(self.path, "a", encoding="utf-8", errors="replace")
                    text = f"{self.header}\n{text}" if self.header else text
                    self.header = ""  # once, even if a late line reopens the file
                self._file.write(text)
                self._file.flush()
                self.written = True
            except OSError:
                self._broken = True  # full or read-only: keep the tail in memory, write no more

    def root_cause(self) -> str | None:
        """The last exception line a library logged ("ValueError: ..."), other than a re-raise's."""
        with self._lock:
            lines = list(self.tail)
        for line in reversed(lines):
            match = _EXCEPTION_LINE.search(line)
            if match and "root cause above" not in line:
                return match.group(0).strip()
        return None

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                with contextlib.suppress(OSError):
                    self._file.close()
                self._file = None


_EXCEPTION_LINE = re.compile(r"\b[A-Za-z_.]*(?:Error|Exception): \S.*$")


class Lines:
    """Text written in pieces, passed on as whole lines; progress-bar lines and redraws dropped."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self._write, self._pending, self._lock = write, "", threading.Lock()

    def add(self, text: str) -> None:
        with self._lock:
            self._pending += text
            if "\n" not in self._pending:
                return
            *lines, self._pending = self._pending.split("\n")
        self._write("".join(f"{line}\n" for line in lines if not _is_bar(line)))

    def finish(self) -> None:
        with self._lock:
            rest, self._pending = self._pending, ""
        if rest and not _is_bar(rest):
            self._write(rest + "\n")


def _is_bar(line: str) -> bool:
    return "\r" in line or BAR.search(line) is not None


class LibraryStream(io.TextIOBase):
    """``sys.stderr`` during a run: into the log file.

    After the run it writes to whatever ``sys.stderr`` is then, so a handler that a library
    created during the run, and keeps, behaves as if the run had never redirected it.
    """

    def __init__(self, log: LogFile, descriptor: int | None) -> None:
        super().__init__()
        self._lines: Lines | None = Lines(log.write)
        self._descriptor = descriptor

    @staticmethod
    def _outside() -> TextIO:
        return sys.stderr if not isinstance(sys.stderr, LibraryStream) else sys.__stderr__

    def write(self, text: str) -> int:
        lines = self._lines
        if lines is None:
            return self._outside().write(text)
        lines.add(text)
        return len(text)

    def flush(self) -> None:
        if self._lines is None:
            self._outside().flush()

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:  # a subprocess handed sys.stderr writes where descriptor 2 does
        if self._lines is None or self._descriptor is None:
            return self._outside().fileno()
        return self._descriptor

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def release(self) -> None:
        """Write out an unfinished line; later writes go to ``sys.stderr``."""
        lines, self._lines = self._lines, None
        if lines is not None:
            lines.finish()


class Terminal(io.TextIOBase):
    """The terminal's stderr through a copy of descriptor 2; after the run, ``sys.stderr``.

    A copy, so a Progress made during the run and closed after it never writes to a descriptor
    number that something else has reused since.
    """

    def __init__(self, descriptor: int, like: TextIO) -> None:
        super().__init__()
        self._tty = os.isatty(descriptor)
        self._file: TextIO | None = open(
            os.dup(descriptor), "w", encoding=getattr(like, "encoding", None) or "utf-8",
            errors=getattr(like, "errors", None) or "backslashreplace", buffering=1)

    def write(self, text: str) -> int:
        return (self._file or sys.stderr).write(text)

    def flush(self) -> None:
        (self._file or sys.stderr).flush()

    def isatty(self) -> bool:
        return self._tty if self._file is not None else sys.stderr.isatty()

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return (self._file or sys.stderr).fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return (self._file or sys.stderr).encoding

    def release(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.close()


class Descriptor2:
    """File descriptor 2 into the log (``quiet``: only its in-memory tail) until ``restore``; ``terminal`` stays
    the terminal."""

    def __init__(self, log: LogFile, stderr: TextIO) -> None:
        stderr.flush()
        self.saved = os.dup(2)
        self.terminal: Terminal | None = None
        if _descriptor(stderr) == 2:  # our lines must not follow descriptor 2 into the log
            self.terminal = Terminal(self.saved, stderr)
        # quiet or not, a pipe: with ``quiet`` the log keeps only its in-memory tail (for root causes)
        source, target = os.pipe()
        self.pump: threading.Thread | None = threading.Thread(
            target=_pump, args=(source, Lines(log.write)), name="rerank-library-output", daemon=True)
        self.pump.start()
        os.dup2(target, 2)
        os.close(target)

    def restore(self) -> None:
        if self.terminal is not None:
            self.terminal.release()
        try:
            sys.__stderr__.flush()  # what a library wrote there goes to the log still
        except (AttributeError, OSError, ValueError):
            pass
        os.dup2(self.saved, 2)  # also closes the pipe's last writer in this process
        os.close(self.saved)
        if self.pump is not None:
            self.pump.join(timeout=2.0)  # a subprocess that outlives the run keeps it open


def _descriptor(stream: Any) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def _pump(source: int, lines: Lines) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    try:
        while chunk := os.read(source, 65536):
            lines.add(decoder.decode(chunk))
        lines.add(decoder.decode(b"", final=True))
        lines.finish()
    finally:
        os.close(source)


@contextmanager
def library_output(log_path: Path | None, title: str = "rerank") -> Iterator[LogFile]:
    """Libraries' logs, warnings and stderr into ``log_path`` (None: nowhere), bars off; all restored after.

    Yields the log file, whose ``written`` says whether any line reached it.
    """
    quiet = log_path is None
    stamp = dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds")
    log = LogFile(log_path, f"===== {stamp} {title} (pid {os.getpid()}) =====")
    saved_environment = {name: os.environ.get(name) for name in ENVIRONMENT}
    root = logging.getLogger()
    saved_root = (root.handlers[:], root.level)
    saved_showwarning, saved_stderr = warnings.showwarning, sys.stderr
    saved_loggers: dict[logging.Logger, tuple[list[logging.Handler], bool]] = {}
    restore_bars: list[Callable[[], None]] = []
    descriptor: Descriptor2 | None = None
    stream: LibraryStream | None = None
    installed = False

    def show_warning(message: Any, category: type[Warning], filename: str, lineno: int,
                     file: TextIO | None = None, line: str | None = None) -> None:
        when = dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        text = warnings.formatwarning(message, category, filename, lineno, line)
        if stream is not None:
            stream.write(f"{when} WARNING py.warnings: {text.rstrip()}\n")

    try:
        os.environ.update(ENVIRONMENT)
        saved_loggers = _reroute_loggers()
        restore_bars = _library_bars_off()
        try:
            descriptor = Descriptor2(log, saved_stderr)
        except OSError:  # no descriptor 2 to redirect (a daemon): Python-level redirection only
            descriptor = None
        stream = LibraryStream(log, 2 if descriptor is not None else None)
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(FORMAT))
        root.handlers = [handler]
        if not quiet:
            root.setLevel(logging.INFO)
        warnings.showwarning = show_warning
        _terminals.append(descriptor.terminal if descriptor and descriptor.terminal else saved_stderr)
        sys.stderr = stream
        installed = True
        yield log
    finally:
        if installed:
            sys.stderr = saved_stderr
            _terminals.pop()
        warnings.showwarning = saved_showwarning
        root.handlers, level = saved_root
        root.setLevel(level)
        for logger, (handlers, propagate) in saved_loggers.items():
            logger.handlers, logger.propagate = handlers, propagate
        for restore in reversed(restore_bars):
            restore()
        for name, value in saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if stream is not None:
            stream.release()
        if descriptor is not None:
            descriptor.restore()
        log.close()


def _reroute_loggers() -> dict[logging.Logger, tuple[list[logging.Handler], bool]]:
    """Loggers with handlers of their own (transformers', Ray's) propagate to the root instead."""
    saved = {}
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and logger.handlers and not name.startswith("rerankcli"):
            saved[logger] = (logger.handlers[:], logger.propagate)
            logger.handlers, logger.propagate = [], True
    return saved


def _library_bars_off() -> list[Callable[[], None]]:
    """Switch off the bars of libraries imported already (the environment covers later imports)."""
    restore = []
    hf_logging = sys.modules.get("transformers.utils.logging")
    if hf_logging is not None and hf_logging.is_progress_bar_enabled():
        hf_logging.disable_progress_bar()
        restore.append(hf_logging.enable_progress_bar)
    hub = sys.modules.get("huggingface_hub.utils")
    if hub is not None and not hub.are_progress_bars_disabled():
        hub.disable_progress_bars()
        restore.append(hub.enable_progress_bars)
    return restore
