"""``CACHEDIR.TAG``: the mark that makes a folder a rerank cache (the Cache Directory Tagging spec).

``rerank cache prune`` deletes files, so it must never run in a folder that is not a cache: a
mistyped ``--cache-dir`` (``~``, ``/``, a project folder holding ``tmp/`` or ``locks/``) would
cost a user their files. The store writes this tag when it first publishes into (or reads from)
a cache folder, and ``rerank cache`` refuses a folder without it. The spec's signature line also
makes backup tools (tar --exclude-caches, borg, restic) skip the cache; so the store does not
tag a folder that holds files rerank did not write: the user's files there must stay backed up.
See https://bford.info/cachedir/.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

TAG = "CACHEDIR.TAG"
SIGNATURE = "Signature: 8a477f597d28d172789f06886806bc55"
TEXT = (f"{SIGNATURE}\n"
        "# This file is a cache directory tag created by rerankcli (the `rerank` command).\n"
        "# For information about cache directory tags, see https://bford.info/cachedir/\n")


def tag_of(root: Path) -> str | None:
    """The first 512 bytes of ``root``'s tag if it is a regular file; None if there is none."""
    try:
        fd = os.open(root / TAG, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a folder or a FIFO is no tag
            return None
        return os.read(fd, 512).decode("utf-8", "replace")
    finally:
        os.close(fd)


def is_tagged(root: Path) -> bool:
    """Whether ``root`` holds a tag (any program's: the spec says only that the folder is a cache)."""
    text = tag_of(root)
    return text is not None and text.startswith(SIGNATURE)


def is_rerank_cache(root: Path) -> bool:
    """Whether ``root`` holds rerank's tag: a cache that rerank's commands may prune."""
    text = tag_of(root)
    return text is not None and text.startswith(SIGNATURE) and "rerankcli" in text
