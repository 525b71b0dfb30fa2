"""Content-addressed cache of stage outputs and artefacts (indexes, embeddings).

Layout under the cache folder:
  stages/<key>/run.trec | metrics.json, manifest.json   one folder per stage key
  artifacts/<kind>/<key>/...                             e.g. a BM25 index, corpus embeddings
  journals/<key>[.<i>-of-<N>].jsonl                      per-query results of a stage being computed
  locks/<key>.lock                                       held by the process computing a stage
  tmp/                                                   staging, renamed into place when complete
An entry exists only once its folder is renamed into place, so a crash leaves no entry
that looks complete, and two processes computing the same key cannot corrupt it. A process
computing a stage also holds the key's lock, so a second ``rerank run`` on the same cache
waits for the entry instead of computing it again beside the first (and sharing its journal).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from rerankcli.core.atomic import publish_dir
from rerankcli.core.hashing import use_memo


def default_cache_dir() -> Path:
    """``$RERANK_CACHE_DIR``, else ``$XDG_CACHE_HOME/rerankcli``, else ``~/.cache/rerankcli``."""
    if os.environ.get("RERANK_CACHE_DIR"):
        return Path(os.environ["RERANK_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rerankcli"


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root
        use_memo(root / "file-digests.json")

    def stage_dir(self, key: str) -> Path:
        return self.root / "stages" / key

    def has_stage(self, key: str) -> bool:
        return (self.stage_dir(key) / "manifest.json").is_file()

    def journal_path(self, key: str, shard: Any = None) -> Path:
        """Where a per-query stage journals its finished queries (one file per key and shard)."""
        suffix = f".{shard.index}-of-{shard.count}" if shard is not None else ""
        return self.root / "journals" / f"{key}{suffix}.jsonl"

    @contextlib.contextmanager
    def lock(self, key: str, on_wait: Callable[[], None] = lambda: None) -> Iterator[None]:
        """Hold the key's exclusive lock (``flock``: released by the kernel if the process dies)."""
        folder = self.root / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{key}.lock", "a") as handle:
            if fcntl is None:  # no flock (Windows): atomic publishing still keeps entries whole
                yield
                return
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                on_wait()
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def artifact_dir(self, kind: str, key: str) -> Path:
        return self.root / "artifacts" / kind / key

    def staging(self) -> Path:
        """A fresh private folder to write an entry into before publishing it."""
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="entry-", dir=self.root / "tmp"))

    def publish(self, staging: Path, final: Path) -> Path:
        """Rename ``staging`` to ``final``; if ``final`` exists (another writer), keep that."""
        publish_dir(staging, final)
        return final

    def replace(self, staging: Path, final: Path) -> Path:
        """Publish ``staging`` over an existing entry (``--force``): old entry moved aside first."""
        if final.exists():
            trash = Path(tempfile.mkdtemp(prefix="old-", dir=self.root / "tmp"))
            os.rename(final, trash / "entry")
            shutil.rmtree(trash, ignore_errors=True)
        return self.publish(staging, final)
