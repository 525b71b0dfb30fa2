"""Fault injection: make a chosen write fail, or a signal arrive, exactly where the machine could.

Every write of rerankcli goes through ``rerankcli.core.atomic`` (files, the stage journal,
publishing a cache entry), and the runner marks each stage's start and end; each of those calls
``point(name)``. Normally that is one empty-tuple check. A test (or a user reproducing a
fault) arms points with ``$RERANK_FAULTS``, a comma-separated list of ``ACTION@PATTERN[#N]``:

* ACTION: an errno name (``ENOSPC``, ``EACCES``, ``EIO``, ``EROFS``, ...): the write raises
  ``OSError`` with that errno and the path, as the kernel would; or ``SIGINT`` / ``SIGTERM``:
  the process sends itself that signal, a real one, handled as if it came from outside; or
  ``SIGKILL``: the process dies on the spot (an out-of-memory kill, a preempted batch job);
* PATTERN: an ``fnmatch`` pattern over the point's name: ``write:<path>`` (an atomic file
  write, after part of the data is written), ``journal:<path>`` (appending one finished query),
  ``publish:<entry folder>`` (renaming a cache entry into place), ``stage-start:<stage>``,
  ``stage-end:<stage>`` (after the stage's outputs are written);
* N: fire at the N-th matching point of the process (default 1).

For example ``RERANK_FAULTS='ENOSPC@write:*/stages/*/run.trec'`` or
``RERANK_FAULTS='SIGTERM@journal:*#3'`` (the third finished query of an LLM stage).
"""

from __future__ import annotations

import errno as errnos
import fnmatch
import os
import signal
from dataclasses import dataclass, field

VARIABLE = "RERANK_FAULTS"


@dataclass
class Fault:
    action: str
    pattern: str
    nth: int = 1
    seen: int = field(default=0, compare=False)


def parse(spec: str) -> tuple[Fault, ...]:
    """The faults armed by ``spec``; a malformed spec is refused loudly (it is a test's mistake)."""
    faults = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        action, sep, rest = item.partition("@")
        pattern, _, nth = rest.partition("#")
        if not sep or not pattern or not (action in ("SIGINT", "SIGTERM", "SIGKILL") or hasattr(errnos, action)):
            raise ValueError(f"${VARIABLE}: cannot read {item!r}; write ACTION@PATTERN[#N]")
        faults.append(Fault(action, pattern, int(nth) if nth else 1))
    return tuple(faults)


try:
    _armed: tuple[Fault, ...] = parse(os.environ.get(VARIABLE, ""))
    _problem: str | None = None
except ValueError as exc:  # reported by ``check()`` as one line, not a traceback at import
    _armed, _problem = (), str(exc)


def check() -> None:
    """Refuse a malformed ``$RERANK_FAULTS`` (the CLI calls this first): one line, exit 2."""
    if _problem is not None:
        from rerankcli.core.errors import UserError

        raise UserError(_problem)


def armed() -> bool:
    """Whether any fault is armed in this process (writers then take their slower, split path)."""
    return bool(_armed)


def point(name: str, path: object = None) -> None:
    """A place where a fault may be injected; raises or signals only when armed for ``name``."""
    if not _armed:
        return
    for fault in _armed:
        if fnmatch.fnmatchcase(name, fault.pattern):
            fault.seen += 1
            if fault.seen == fault.nth:
                _fire(fault, name if path is None else path)


def _fire(fault: Fault, path: object) -> None:
    if fault.action.startswith("SIG"):
        os.kill(os.getpid(), getattr(signal, fault.action))  # Python runs the handler right here
        return
    code = getattr(errnos, fault.action)
    raise OSError(code, os.strerror(code), str(path))
