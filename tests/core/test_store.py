"""The store seals what it publishes, refuses to read what fails the seal, and leaves no lock behind.

Each damage a disk, a copy or a hand can do to an entry is made here on a real folder; the
store must see it, say so in one line, and remove the entry so that it is computed again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rerankcli.core import hashing, locks
from rerankcli.core import seal as seal_module
from rerankcli.core import store as store_module
from rerankcli.core.cache_tag import TAG, is_rerank_cache
from rerankcli.core.entries import ABANDONED_AFTER_S
from rerankcli.core.errors import UserError
from rerankcli.core.seal import SEAL
from rerankcli.core.store import Store

KEY = "ab12cd34ef56" + "0" * 52
RUN = b"q1 Q0 d1 1 2.5 bm25\nq1 Q0 d2 2 1.5 bm25\n"
MANIFEST = b'{"stage": "bm25", "type": "retrieve"}\n'


@pytest.fixture
def warnings() -> list[str]:
    return []


@pytest.fixture
def store(tmp_path: Path, warnings: list[str]):
    store = Store(tmp_path / "cache", warn=warnings.append)
    yield store
    store.close()


def publish_stage(store: Store, key: str = KEY, extra: dict[str, bytes] | None = None) -> Path:
    staging = store.staging()
    for name, content in {"run.trec": RUN, "manifest.json": MANIFEST, **(extra or {})}.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_bytes(content)
    return store.publish(staging, store.stage_dir(key))


def forget_digests() -> None:
    """As a new process would: no entry verified yet."""
    store_module._verified.clear()
    store_module._warned.clear()


# -- the seal ---------------------------------------------------------------------------------

def test_publishing_seals_every_file_with_its_size_and_sha256(store: Store) -> None:
    final = publish_stage(store, extra={"nested/part.bin": b"\x00\x01"})
    seal = json.loads((final / SEAL).read_text())
    assert seal["format"] == 1
    assert seal["files"] == {
        name: {"size": len(content), "sha256": hashlib.sha256(content).hexdigest()}
        for name, content in {"run.trec": RUN, "manifest.json": MANIFEST, "nested/part.bin": b"\x00\x01"}.items()}
    assert list((store.root / "tmp").iterdir()) == []


def test_replacing_an_entry_seals_the_new_one(store: Store) -> None:
    publish_stage(store)
    staging = store.staging()
    (staging / "run.trec").write_bytes(b"q1 Q0 d9 1 9 forced\n")
    (staging / "manifest.json").write_bytes(MANIFEST)
    final = store.replace(staging, store.stage_dir(KEY))
    assert json.loads((final / SEAL).read_text())["files"]["run.trec"]["size"] == 20
    forget_digests()
    assert store.has_stage(KEY)
    assert [p.name for p in final.parent.iterdir()] == [KEY]  # the old one moved aside and deleted


def test_an_intact_entry_is_used_and_its_use_recorded(store: Store, warnings: list[str]) -> None:
    final = publish_stage(store)
    os.utime(final / SEAL, (1_000_000, 1_000_000))
    forget_digests()
    assert store.has_stage(KEY)
    assert time.time() - (final / SEAL).stat().st_mtime < 60  # "last used" is now
    assert warnings == []


# -- each kind of damage ------------------------------------------------------------------------

def truncate(final: Path) -> None:
    (final / "run.trec").write_bytes(RUN[:10])


def same_size_other_bytes(final: Path) -> None:
    (final / "run.trec").write_bytes(RUN.replace(b"d1", b"d7"))


DAMAGE = {
    "truncated file": (truncate, "run.trec: 10 bytes, sealed 40"),
    "missing file": (lambda f: (f / "run.trec").unlink(), "run.trec: missing"),
    "same size, other bytes": (same_size_other_bytes, "run.trec: content differs from its sealed sha256"),
    "torn manifest": (lambda f: (f / "manifest.json").write_bytes(MANIFEST[:7]), "manifest.json: 7 bytes, sealed"),
    "no seal (an entry from before seals)": (lambda f: (f / SEAL).unlink(), "no seal.json"),
    "garbage seal": (lambda f: (f / SEAL).write_bytes(b"\x00\xff garbage"), "seal.json is not text"),
    "seal replaced by a FIFO (never opened)": (lambda f: ((f / SEAL).unlink(), os.mkfifo(f / SEAL)),
                                               "seal.json is not a regular file"),
    "run replaced by a FIFO (never opened)": (lambda f: ((f / "run.trec").unlink(), os.mkfifo(f / "run.trec")),
                                              "run.trec: not a regular file"),
    "seal of 20 MB": (lambda f: (f / SEAL).write_bytes(b" " * (20 << 20)), "seal.json is 20971520 bytes, too large"),
    "seal that is not JSON": (lambda f: (f / SEAL).write_text("{files: "), "seal.json is not valid JSON"),
    "seal nested 100000 deep (a RecursionError)": (lambda f: (f / SEAL).write_text("[" * 100_000),
                                                   "seal.json is not valid JSON"),
    "seal naming a file with a newline": (
        lambda f: (f / SEAL).write_text(json.dumps({"format": 1, "files": {"run\n.trec": {"size": 1, "sha256": "0" * 64}}})),
        "seal.json: the record of 'run\\n.trec' is malformed"),
    "seal of another shape": (lambda f: (f / SEAL).write_text("[1, 2]"), "seal.json is not a seal of format 1"),
    "seal record with a negative size": (
        lambda f: (f / SEAL).write_text(json.dumps({"format": 1, "files": {"run.trec": {"size": -1, "sha256": "0" * 64}}})),
        "seal.json: the record of 'run.trec' is malformed"),
    "seal naming a path outside": (
        lambda f: (f / SEAL).write_text(json.dumps({"format": 1, "files": {"../x": {"size": 1, "sha256": "0" * 64}}})),
        "seal.json: the record of '../x' is malformed"),
    "stage seal without its manifest": (
        lambda f: (f / SEAL).write_text(json.dumps({"format": 1, "files": {
            "run.trec": {"size": len(RUN), "sha256": hashlib.sha256(RUN).hexdigest()}}})),
        "seal.json lists no manifest.json"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_stage_entry_is_reported_once_and_removed(store: Store, warnings: list[str], damage: str) -> None:
    make, why = DAMAGE[damage]
    final = publish_stage(store)
    make(final)
    forget_digests()
    assert store.problem(final, digests=True).startswith(why)
    assert not store.has_stage(KEY)
    assert len(warnings) == 1 and warnings[0].startswith(f"[cache] entry stages/ab12cd34ef56 is damaged ({why}")
    assert warnings[0].endswith("; recomputing it")
    assert not final.exists() and os.listdir(final.parent) == []  # moved aside, then deleted
    assert not store.has_stage(KEY) and len(warnings) == 1


def test_a_damaged_artifact_is_reported_and_removed(store: Store, warnings: list[str]) -> None:
    staging = store.staging()
    (staging / "embeddings.npy").write_bytes(b"\x93NUMPY" + b"\x00" * 100)
    final = store.publish(staging, store.artifact_dir("dense-embeddings", "f" * 64))
    forget_digests()
    assert store.has_artifact("dense-embeddings", "f" * 64)
    (final / "embeddings.npy").write_bytes(b"\x93NUMPY")
    assert not store.has_artifact("dense-embeddings", "f" * 64)
    assert warnings == ["[cache] entry artifacts/dense-embeddings/ffffffffffff is damaged "
                        "(embeddings.npy: 6 bytes, sealed 106); recomputing it"]
    assert not final.exists()


def test_publishing_over_a_damaged_entry_replaces_it(store: Store) -> None:
    final = publish_stage(store)
    truncate(final)
    publish_stage(store)  # what a recompute does after a reader could not remove the bad entry
    forget_digests()
    assert (final / "run.trec").read_bytes() == RUN and store.problem(final, digests=True) is None


def test_publishing_beside_an_intact_entry_keeps_it(store: Store) -> None:
    final = publish_stage(store)
    seal = (final / SEAL).read_bytes()
    staging = store.staging()
    (staging / "run.trec").write_bytes(b"other\n")
    (staging / "manifest.json").write_bytes(MANIFEST)
    store.publish(staging, final)  # another writer lost the race: the first entry stays
    assert (final / SEAL).read_bytes() == seal and not staging.exists()


# -- digests once per process -----------------------------------------------------------------------

def test_digests_are_checked_once_per_process_sizes_every_time(store: Store, monkeypatch) -> None:
    publish_stage(store)
    forget_digests()
    hashed = []
    real = seal_module.sha256_of
    monkeypatch.setattr(seal_module, "sha256_of", lambda path: hashed.append(path.name) or real(path))
    assert store.has_stage(KEY) and store.has_stage(KEY) and store.has_stage(KEY)
    assert sorted(hashed) == ["manifest.json", "run.trec"]  # the first use only
    (store.stage_dir(KEY) / "run.trec").write_bytes(RUN[:-1])
    assert not store.has_stage(KEY)  # a size change is still seen at once


def test_a_new_process_checks_the_digests_again(store: Store, tmp_path: Path) -> None:
    final = publish_stage(store)
    assert store.has_stage(KEY)
    same_size_other_bytes(final)
    assert store.has_stage(KEY)  # verified in this process already: sizes only (the documented trade-off)
    code = ("import sys; from pathlib import Path; from rerankcli.core.store import Store; "
            f"sys.exit(0 if not Store(Path({str(store.root)!r}), warn=print).has_stage({KEY!r}) else 3)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result
    assert "content differs from its sealed sha256" in result.stdout


# -- locks -------------------------------------------------------------------------------------

def test_a_released_lock_leaves_no_file(store: Store) -> None:
    with store.lock(KEY):
        assert (store.root / "locks" / f"{KEY}.lock").exists()
    assert os.listdir(store.root / "locks") == []


def test_a_lock_released_by_an_error_leaves_no_file(store: Store) -> None:
    with pytest.raises(RuntimeError), store.lock(KEY):
        raise RuntimeError("the stage failed")
    assert os.listdir(store.root / "locks") == []


def test_a_waiter_on_a_removed_lock_file_takes_the_new_one(store: Store) -> None:
    """The classic race: the waiter's flock succeeds on the unlinked file; it must start again."""
    path = store.root / "locks" / "race.lock"
    path.parent.mkdir(parents=True)
    first = locks.acquire(path, fcntl.LOCK_EX)
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(locks.acquire(path, fcntl.LOCK_EX)))
    waiter.start()
    time.sleep(0.3)  # the waiter has opened the file and blocks in flock
    locks.release(path, first)  # unlinks it, then unlocks
    waiter.join(10)
    assert got and os.fstat(got[0]).st_ino == path.stat().st_ino  # it holds the file the path names
    other = locks.acquire(path, fcntl.LOCK_EX, wait=False)
    assert other is None  # so a third process is excluded
    locks.release(path, got[0])
    assert not path.exists()


def test_the_lock_excludes_under_contention(store: Store) -> None:
    """Eight threads (separate open files, as processes would have) never hold the lock together."""
    inside, overlaps = [0], []

    def work() -> None:
        for _ in range(100):
            with store.lock(KEY):
                inside[0] += 1
                time.sleep(0.0005)  # long enough for the others to pile up on the file
                if inside[0] != 1:
                    overlaps.append(inside[0])
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert overlaps == [] and os.listdir(store.root / "locks") == []


def test_a_reader_holds_the_entry_against_prune_until_it_closes(store: Store, tmp_path: Path) -> None:
    publish_stage(store)
    entry = store.entries()[0]
    pruner = Store(store.root)
    with pruner.claim(entry.locks) as ours:
        assert not ours  # the publishing process has read it
    store.close()
    with pruner.claim(entry.locks) as ours:
        assert ours
    assert os.listdir(store.root / "locks") == []


def test_an_exiting_process_leaves_no_lock_and_no_staging(tmp_path: Path) -> None:
    """Reading locks and an unpublished staging folder (a failed stage) go when the process ends."""
    root = tmp_path / "cache"
    code = (
        "from pathlib import Path; from rerankcli.core.store import Store\n"
        f"store = Store(Path({str(root)!r}))\n"
        "staging = store.staging(); (staging / 'run.trec').write_text('q1 Q0 d1 1 1 x\\n')\n"
        "(staging / 'manifest.json').write_text('{}')\n"
        f"store.publish(staging, store.stage_dir({KEY!r}))\n"
        f"assert store.has_stage({KEY!r})\n"
        "(store.staging() / 'half.trec').write_text('q1 Q0')\n"
        "raise SystemExit('the next stage failed')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1 and "the next stage failed" in result.stderr
    assert os.listdir(root / "locks") == [] and os.listdir(root / "tmp") == []
    assert os.listdir(root / "stages") == [KEY]


# -- listing ------------------------------------------------------------------------------------

def test_entries_and_leftovers_are_listed(store: Store) -> None:
    publish_stage(store)
    staging = store.staging()
    (staging / "docids.json").write_text("[]")
    store.publish(staging, store.artifact_dir("bm25s-index", "e" * 64))
    (store.root / "journals").mkdir()
    (store.root / "journals" / f"{KEY}.jsonl").write_text("{}\n")
    half = store.staging()
    assert [(e.kind, e.label) for e in store.entries()] == [
        ("stage", "stages/ab12cd34ef56"), ("bm25s-index", "artifacts/bm25s-index/eeeeeeeeeeee")]
    found = {(item.what, item.path.name) for item in store.leftovers()}
    assert ("journal", f"{KEY}.jsonl") in found and ("staging folder", half.name) in found



def leftover(store: Store, name: str):
    return next(item for item in store.leftovers() if item.path.name == name)


def test_a_young_staging_folder_of_a_live_process_started_before_it_is_left_alone(store: Store) -> None:
    folder = store.root / "tmp" / "entry-1-abcd1234"  # pid 1 is alive, and started before this folder
    folder.mkdir(parents=True)
    # the folder's own time: an hour earlier would precede pid 1's start on a machine booted since
    assert store.writer_of(leftover(store, folder.name), folder.stat().st_mtime, time.time()) == 1


def test_a_staging_folder_untouched_for_a_day_is_abandoned_whatever_its_pid(store: Store) -> None:
    folder = store.root / "tmp" / "entry-1-abcd1234"
    folder.mkdir(parents=True)
    now = time.time()
    assert store.writer_of(leftover(store, folder.name), now - ABANDONED_AFTER_S - 60, now) is None


def test_a_staging_folder_whose_pid_is_reused_by_a_younger_process_is_abandoned(store: Store) -> None:
    """The pid names a live process, but one that started after the folder was last written."""
    written = time.time() - 600
    younger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        folder = store.root / "tmp" / f"entry-{younger.pid}-abcd1234"
        folder.mkdir(parents=True)
        assert store.writer_of(leftover(store, folder.name), written, time.time()) is None
        assert store.writer_of(leftover(store, folder.name), time.time(), time.time()) == younger.pid
    finally:
        younger.kill()
        younger.wait()


def test_a_staging_folder_of_a_dead_process_is_abandoned(store: Store) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    folder = store.root / "tmp" / f"entry-{dead.stdout.strip()}-abcd1234"
    folder.mkdir(parents=True)
    assert store.writer_of(leftover(store, folder.name), time.time(), time.time()) is None


def test_only_names_of_the_shapes_rerank_writes_are_entries_or_leftovers(store: Store) -> None:
    """The defence behind the tag: in a cache, a user's files are never listed as removable."""
    publish_stage(store)
    store.close()  # its reading lock is no leftover either way
    mine = ["stages/thesis/draft.tex", f"stages/{KEY[:63]}/x", "stages/notes.txt", "artifacts/Photos/a.jpg",
            "artifacts/bm25s-index/readme.txt", "tmp/project/notes.txt", "tmp/entry-12-short/x", "journals/2025.md",
            f"journals/{KEY}.jsonl.bak", "locks/gpg.lock", f"locks/{KEY}.lock.old", "notes.txt"]
    for name in mine:
        (store.root / name).parent.mkdir(parents=True, exist_ok=True)
        (store.root / name).write_text("mine\n")
    (store.root / "stages" / ("f" * 64)).symlink_to(store.root / "tmp" / "project")  # a link: never an entry
    assert [e.key for e in store.entries()] == [KEY]
    assert store.leftovers() == []
    foreign = {p.relative_to(store.root).as_posix() for p in store.foreign()}
    assert foreign == {"stages/thesis", f"stages/{KEY[:63]}", "stages/notes.txt", f"stages/{'f' * 64}",
                       "artifacts/Photos", "artifacts/bm25s-index/readme.txt", "tmp/project", "tmp/entry-12-short",
                       "journals/2025.md", f"journals/{KEY}.jsonl.bak", "locks/gpg.lock", f"locks/{KEY}.lock.old",
                       "notes.txt"}


# -- the cache tag --------------------------------------------------------------------------------

def test_the_first_published_entry_tags_the_cache_folder(store: Store) -> None:
    assert not (store.root / TAG).exists()
    publish_stage(store)
    lines = (store.root / TAG).read_text().splitlines()
    assert lines[0] == "Signature: 8a477f597d28d172789f06886806bc55"  # the spec's first line, exactly
    assert lines[1].startswith("# ") and "rerankcli" in lines[1]
    assert is_rerank_cache(store.root)


def test_a_failed_stage_leaves_no_tag_in_a_fresh_cache(store: Store) -> None:
    """Staging and locking write nothing lasting: a command that fails before publishing leaves no trace."""
    with pytest.raises(RuntimeError), store.lock(KEY), store.building() as staging:
        (staging / "run.trec").write_bytes(RUN)
        raise RuntimeError("the stage failed")
    assert not (store.root / TAG).exists() and os.listdir(store.root / "tmp") == []


def test_reading_an_untagged_cache_of_an_older_rerank_tags_it(store: Store, tmp_path: Path) -> None:
    publish_stage(store)
    (store.root / TAG).unlink()
    code = ("from pathlib import Path; from rerankcli.core.store import Store\n"
            f"assert Store(Path({str(store.root)!r})).has_stage({KEY!r})\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert is_rerank_cache(store.root)


def test_a_folder_holding_the_users_files_is_not_tagged_and_says_so_once(tmp_path: Path) -> None:
    said: list[str] = []
    (tmp_path / "notes.txt").write_text("mine\n")
    shared = Store(tmp_path, warn=said.append)
    publish_stage(shared)
    publish_stage(shared, key="e" * 64)
    shared.close()
    assert not (tmp_path / TAG).exists()
    assert said == [f"[cache] {tmp_path} holds files rerank did not write (notes.txt; a tag would keep backups "
                    "from saving them), so it is not tagged as a rerank cache and `rerank cache` refuses it: give "
                    "the cache a folder of its own"]


def test_a_read_only_cache_is_read_without_its_tag(store: Store) -> None:
    """Writing the tag of an older cache fails on a read-only file system: reading goes on."""
    publish_stage(store)
    (store.root / TAG).unlink()
    code = ("from pathlib import Path; from rerankcli.core.store import Store\n"
            f"assert Store(Path({str(store.root)!r})).has_stage({KEY!r})\n")
    subprocess.run([sys.executable, "-c", code], check=True,
                   env={**os.environ, "RERANK_FAULTS": "EROFS@write:*/CACHEDIR.TAG"})
    assert not (store.root / TAG).exists()


# -- the cache folder's own folders ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["stages", "artifacts", "journals", "locks", "tmp"])
def test_a_cache_folder_whose_own_folder_is_a_file_is_refused_in_one_line(tmp_path: Path, name: str) -> None:
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / name).write_text("x\n")
    with pytest.raises(UserError) as caught:
        Store(tmp_path / "cache")
    assert str(caught.value) == f"cache folder {tmp_path / 'cache'}: {name} is a file, not a folder"


def test_an_artifact_kind_that_is_a_file_is_refused_when_publishing(store: Store) -> None:
    (store.root / "artifacts").mkdir(parents=True)
    (store.root / "artifacts" / "bm25s-index").write_text("x\n")
    staging = store.staging()
    (staging / "docids.json").write_text("[]")
    with pytest.raises(UserError, match="artifacts/bm25s-index is a file, not a folder"):
        store.publish(staging, store.artifact_dir("bm25s-index", "e" * 64))
    assert not staging.exists()


def test_a_cache_folder_where_no_folder_can_be_made_is_refused_in_one_line() -> None:
    store = Store(Path("/proc/self"))
    with pytest.raises(UserError, match=r"cache folder /proc/self: cannot make its folder locks \(No such file"):
        with store.lock(KEY):
            pass
    with pytest.raises(UserError, match=r"cannot make its folder tmp"):
        store.staging()


# -- replacing an entry (`run --force`) waits for its readers ----------------------------------------

def test_replacing_an_entry_waits_for_the_commands_reading_it(store: Store, warnings: list[str]) -> None:
    final = publish_stage(store)
    store.close()  # this process no longer reads it; another one does:
    reader = open(store.root / "locks" / f"{KEY}.use", "a")
    fcntl.flock(reader, fcntl.LOCK_SH)
    staging = store.staging()
    (staging / "run.trec").write_bytes(b"q1 Q0 d9 1 9 forced\n")
    (staging / "manifest.json").write_bytes(MANIFEST)
    replacing = threading.Thread(target=store.replace, args=(staging, final))
    replacing.start()
    time.sleep(0.5)
    assert replacing.is_alive() and (final / "run.trec").read_bytes() == RUN  # the reader can still copy it
    assert warnings == ["[cache] stages/ab12cd34ef56: waiting for the commands that read it to end before replacing it"]
    reader.close()  # the reader ends
    replacing.join(10)
    assert not replacing.is_alive() and (final / "run.trec").read_bytes() == b"q1 Q0 d9 1 9 forced\n"
    with Store(store.root).claim([f"{KEY}.use"]) as ours:
        assert not ours  # the replacing process reads the new entry, so prune leaves it


def test_a_reader_that_finds_an_entry_damaged_stops_holding_it(store: Store) -> None:
    """Else a `--force` of another process would wait for it while it waits for the stage lock."""
    final = publish_stage(store)
    store.close()
    truncate(final)
    forget_digests()
    assert not store.has_stage(KEY)
    with Store(store.root).claim([f"{KEY}.use"]) as ours:
        assert ours


# -- the file digest memo ---------------------------------------------------------------------------

DEEP = "[" * 100_000


@pytest.mark.parametrize("content", [b"[]", DEEP.encode(), b"\xff\xfe garbage", b'{"a": 1', b"",
                                     b'{"x|1|2": "sha256:nothex", "y|1|2": 7}'],
                         ids=["a list", "nested 100000 deep", "not text", "torn", "empty", "records of another shape"])
def test_a_damaged_digest_memo_is_ignored_and_rewritten(tmp_path: Path, content: bytes) -> None:
    root = tmp_path / "cache"
    root.mkdir()
    (root / "file-digests.json").write_bytes(content)
    said: list[str] = []
    Store(root, warn=said.append)
    (tmp_path / "data.txt").write_text("x\n")
    digest = hashing.file_digest(tmp_path / "data.txt")
    hashing.save_memo()
    memo = json.loads((root / "file-digests.json").read_text())
    assert list(memo.values()) == [digest] and said == []
    assert is_rerank_cache(root)  # the first write into a cache folder tags it


def test_an_oversized_digest_memo_is_ignored_and_rewritten(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(hashing, "MAX_MEMO_BYTES", 100)
    root = tmp_path / "cache"
    root.mkdir()
    stamps = {f"/x/{i}|1|2": "sha256:" + "0" * 64 for i in range(10)}
    (root / "file-digests.json").write_text(json.dumps(stamps))
    Store(root)
    hashing.save_memo()
    assert json.loads((root / "file-digests.json").read_text()) == {}


@pytest.mark.parametrize("kind", ["folder", "FIFO"])
def test_a_digest_memo_that_is_no_file_is_left_alone_with_one_warning(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "cache"
    root.mkdir()
    memo = root / "file-digests.json"
    memo.mkdir() if kind == "folder" else os.mkfifo(memo)  # opening a FIFO to read it would hang
    said: list[str] = []
    Store(root, warn=said.append)
    (tmp_path / "data.txt").write_text("x\n")
    hashing.file_digest(tmp_path / "data.txt")
    hashing.save_memo()  # writes nothing
    assert len(said) == 1 and said[0].startswith(f"[cache] {memo} is a ")
    assert said[0].endswith("not the file rerank remembers file digests in: left alone, and digests are not "
                            "remembered until it is removed")
    assert memo.is_dir() if kind == "folder" else stat.S_ISFIFO(memo.stat().st_mode)
