"""Build the bundled demo collection from Python's own reference documentation.

The demo must run offline and ship legally with the package, so its passages are the
sections of ``pydoc_data.topics`` (the text behind ``help('try')``, PSF licensed and
installed with every CPython). Topics change between Python versions, so the output is
generated once and committed; re-run this script only to refresh it deliberately.

Usage: python scripts/build_demo_corpus.py rerankcli/demo
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from pydoc_data.topics import topics

HEADING = re.compile(r"^([^\n]+)\n(?:=+|-+|\*+)\n", re.MULTILINE)


def slug(text: str) -> str:
    """Lower-case, hyphen-separated id fragment of a section heading."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40]


def sections(topic: str, body: str) -> list[dict[str, str]]:
    """Split one help topic at its underlined headings; each section becomes a passage."""
    marks = list(HEADING.finditer(body))
    out: list[dict[str, str]] = []
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(body)
        text = " ".join(body[mark.end() : end].split())
        if len(text.split()) < 8:
            continue
        title = mark.group(1).strip()
        doc_id = topic if i == 0 else f"{topic}/{slug(title)}"
        out.append({"_id": doc_id, "title": title, "text": text})
    if not marks:
        out.append({"_id": topic, "title": topic, "text": " ".join(body.split())})
    return out


def main(target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    docs = [doc for name in sorted(topics) for doc in sections(name, topics[name])]
    # Many sections appear under several topics ("try" and "compound"); keep one copy,
    # preferring the short top-level topic id so that query judgements stay readable.
    by_text: dict[str, dict[str, str]] = {}
    for doc in sorted(docs, key=lambda d: ("/" in d["_id"], d["_id"])):
        by_text.setdefault(doc["text"], doc)
    kept = sorted(by_text.values(), key=lambda d: d["_id"])
    taken: set[str] = set()
    for doc in kept:  # a topic may repeat a heading with other text ("except" and "except*")
        base, n = doc["_id"], 1
        while doc["_id"] in taken:
            n += 1
            doc["_id"] = f"{base}-{n}"
        taken.add(doc["_id"])
    with open(target / "corpus.jsonl", "w", encoding="utf-8") as out:
        for doc in kept:
            out.write(json.dumps(doc, ensure_ascii=False) + "\n")
    print(f"{len(kept)} passages written to {target / 'corpus.jsonl'}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "rerankcli/demo"))
