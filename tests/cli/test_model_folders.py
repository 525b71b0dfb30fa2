"""A local model folder is checked before anything reads it: one line, exit 2, nothing written.

Hashing a model folder reads every file below it, so a file in it that never ends (a link to
/dev/zero, a FIFO) would hang `validate`; an empty folder or a config.json that is not JSON
would pass `validate` and then fail inside transformers with a traceback.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import DEMO, assert_user_error, snapshot

PIPELINE = ("name: models\n"
            "dataset: {corpus: data/corpus.jsonl, queries: data/queries.tsv, qrels: data/qrels.txt}\n"
            "output: out\nstages:\n"
            "  - {name: bm25, type: retrieve, method: bm25, k: 10}\n"
            "  - {name: llm, type: rerank, method: query-likelihood, model: model, depth: 2}\n")


def make_model(folder: Path, case: str) -> None:
    folder.mkdir()
    if case == "a file linked to /dev/zero":
        (folder / "config.json").write_text("{}\n")
        (folder / "weights.bin").symlink_to("/dev/zero")
    elif case == "config.json is a FIFO":
        os.mkfifo(folder / "config.json")
    elif case == "config.json is not JSON":
        (folder / "config.json").write_text("{{\n")
    elif case == "config.json nests too deeply":
        (folder / "config.json").write_text("[" * 100_000)
    elif case == "tokenizer_config.json nests too deeply":
        (folder / "config.json").write_text("{}\n")
        (folder / "tokenizer_config.json").write_text("[" * 100_000)


CASES = {
    "a file linked to /dev/zero": ("model/weights.bin", "expected a regular file, found a character device"),
    "config.json is a FIFO": ("model/config.json", "found a FIFO"),
    "config.json is not JSON": ("model/config.json", "not valid JSON"),
    "config.json nests too deeply": ("model/config.json", "not valid JSON"),
    "an empty folder": ("model", "is an empty folder"),
}
#: folders that pass the check: what is wrong in them is the loading library's to say
ACCEPTED = ["tokenizer_config.json nests too deeply"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_model_folder_that_cannot_be_a_model_is_one_line(rerank, tmp_path: Path, case: str) -> None:
    root = tmp_path.resolve()
    (root / "data").mkdir()
    for name in ("corpus.jsonl", "queries.tsv", "qrels.txt"):
        shutil.copy(DEMO / name, root / "data" / name)
    (root / "p.yaml").write_text(PIPELINE)
    make_model(root / "model", case)
    before = snapshot(root / "data", root / "p.yaml")
    result = rerank("validate", root / "p.yaml", cwd=root)
    path, fragment = CASES[case]
    assert_user_error(result, "stage 'llm'", str(root / path), fragment)
    assert snapshot(root / "data", root / "p.yaml") == before and not (root / "out").exists()


@pytest.mark.parametrize("case", ACCEPTED)
def test_a_model_folder_with_a_config_passes_validation(rerank, tmp_path: Path, case: str) -> None:
    root = tmp_path.resolve()
    (root / "data").mkdir()
    for name in ("corpus.jsonl", "queries.tsv", "qrels.txt"):
        shutil.copy(DEMO / name, root / "data" / name)
    (root / "p.yaml").write_text(PIPELINE)
    make_model(root / "model", case)
    result = rerank("validate", root / "p.yaml", cwd=root)
    assert result.code == 0 and "Traceback" not in result.err, result.err
