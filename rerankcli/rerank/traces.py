"""A reasoning stage's traces: every call's candidates, reasoning and answer, beside its run.

Why a file of their own: reasoning text is long (thousands of tokens a call), so it stays out
of the manifest, but a user who asks why a document moved needs every word of it. The traces
travel inside each query's journaled record (so they survive a kill, a resume and a shard
merge exactly like the scores) and are written once per stage as gzip-compressed JSON Lines,
one call per line in query order, with a fixed gzip header: the same results give the same
bytes, whichever processes computed them.
"""

from __future__ import annotations

import gzip
import io
import json
import textwrap
from pathlib import Path
from typing import Any

from rerankcli.core.errors import UserError


def traces_file(traces: dict[str, list[dict[str, Any]]]) -> bytes:
    """The traces as gzip JSON Lines: ``{"qid", "call", ...trace}`` per call, queries sorted."""
    lines = [json.dumps({"qid": qid, "call": i, **t}, ensure_ascii=False, sort_keys=True)
             for qid in sorted(traces) for i, t in enumerate(traces[qid])]
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as out:
        out.write(("\n".join(lines) + ("\n" if lines else "")).encode("utf-8"))
    return buffer.getvalue()


def read_traces(path: Path) -> list[dict[str, Any]]:
    """Every call's trace from a traces file; a damaged file is one clear line."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as text:
            return [json.loads(line) for line in text if line.strip()]
    except FileNotFoundError:
        raise UserError(f"{path}: no traces here (only a stage with reasoning: writes them)") from None
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a readable traces file ({type(exc).__name__}: {exc})") from None


def explain(calls: list[dict[str, Any]], qid: str, docid: str | None = None, width: int = 100) -> str:
    """The calls of query ``qid`` (those that showed ``docid``, if given), readably."""
    mine = [c for c in calls if c.get("qid") == qid]
    if not mine:
        known = sorted({str(c.get("qid")) for c in calls})
        raise UserError(f"query {qid!r} has no traces; traced queries: {', '.join(known[:10])}"
                        + (" ..." if len(known) > 10 else ""))
    if docid is not None:
        mine = [c for c in mine if docid in c.get("docs", [])]
        if not mine:
            raise UserError(f"document {docid!r} was not shown to the model in any call of query {qid!r}")
    out = []
    for c in mine:
        docs = c.get("docs", [])
        shown = ", ".join(f"[{d}]" if d == docid else d for d in docs)
        flags = [f for f, on in (("close forced", c.get("forced")), ("fell back", c.get("fallback"))) if on]
        out.append(f"call {c.get('call')} · {len(docs)} candidate{'s' * (len(docs) != 1)}: {shown}")
        out.append(f"  reasoning ({c.get('reasoning_tokens', 0)} tokens{', ' + ', '.join(flags) if flags else ''}):")
        reasoning = c.get("reasoning") or "(none)"
        for paragraph in reasoning.splitlines() or [""]:
            out.extend(textwrap.wrap(paragraph, width, initial_indent="    ", subsequent_indent="    ") or [""])
        if c.get("dropped"):
            out.append(f"  cut off by the forced close: {c['dropped'][:width]}")
        out.append(f"  answer: {json.dumps(c.get('answer'), ensure_ascii=False)}")
        out.append("")
    return "\n".join(out)
