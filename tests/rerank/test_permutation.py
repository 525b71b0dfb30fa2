"""The listwise answer parser: 36 malformed outputs, each with its repaired permutation."""

from __future__ import annotations

import pytest

from rerankcli.rerank.permutation import parse_permutation

CASES = [
    # (model output, n, expected 1-based order, repairs)
    ("[3] > [1] > [2]", 3, [3, 1, 2], {}),
    ("[2]>[3]>[1]", 3, [2, 3, 1], {}),
    ("[ 2 ] > [ 1 ] > [ 3 ]", 3, [2, 1, 3], {}),
    ("[2] [1] [3]", 3, [2, 1, 3], {}),
    ("[2], [3], [1]", 3, [2, 3, 1], {}),
    ("[2] > [3] > [1]\n", 3, [2, 3, 1], {}),
    ("3 > 1 > 2", 3, [3, 1, 2], {"no_brackets": 1}),
    ("3, 1, 2", 3, [3, 1, 2], {"no_brackets": 1}),
    ("3 1 2", 3, [3, 1, 2], {"no_brackets": 1}),
    ("The ranking is: [2] > [1] > [3].", 3, [2, 1, 3], {"extra_text": 1}),
    ("Sure! Here is the ranking:\n[3] > [2] > [1]\nI hope this helps.", 3, [3, 2, 1], {"extra_text": 1}),
    ("<think>passage 1 mentions it, [1] is best</think>[1] > [3] > [2]", 3, [1, 3, 2], {"think_block": 1}),
    ("<think>\nlet me see [3] [2]\n</think>\n\n[2] > [3] > [1]", 3, [2, 3, 1], {"think_block": 1}),
    ("<think>unfinished reasoning about [2]", 3, [1, 2, 3], {"think_block": 1, "no_ranking": 1}),
    ("<THINK>x</THINK>[2] > [1] > [3]", 3, [2, 1, 3], {"think_block": 1}),
    ("[2] > [2] > [1] > [3]", 3, [2, 1, 3], {"duplicate": 1}),
    ("[1] > [1] > [1]", 3, [1, 2, 3], {"duplicate": 2, "missing": 2}),
    ("[4] > [2] > [1] > [3]", 3, [2, 1, 3], {"out_of_range": 1}),
    ("[0] > [3] > [1] > [2]", 3, [3, 1, 2], {"out_of_range": 1}),
    ("[2] > [1]", 3, [2, 1, 3], {"missing": 1}),
    ("[3]", 4, [3, 1, 2, 4], {"missing": 3}),
    ("", 3, [1, 2, 3], {"no_ranking": 1}),
    ("I cannot rank these passages.", 3, [1, 2, 3], {"extra_text": 1, "no_ranking": 1}),
    ("[a] > [b] > [c]", 3, [1, 2, 3], {"extra_text": 1, "no_ranking": 1}),
    ("[10] > [2] > [1]", 10, [10, 2, 1, 3, 4, 5, 6, 7, 8, 9], {"missing": 7}),
    ("[12] > [21] > [3]", 20, [12, 3, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20],
     {"out_of_range": 1, "missing": 18}),
    ("[2] > [1] > [3] > [99] > [2]", 3, [2, 1, 3], {"out_of_range": 1, "duplicate": 1}),
    ("Passage [2] is the most relevant, then [3], then [1].", 3, [2, 3, 1], {"extra_text": 1}),
    ("[2] > [1] > 3", 3, [2, 1, 3], {"extra_text": 1, "missing": 1}),
    ("1. [3]\n2. [1]\n3. [2]", 3, [3, 1, 2], {"extra_text": 1}),
    ("[3] > [1] > [2] > [4] > [5] > [6]", 6, [3, 1, 2, 4, 5, 6], {}),
    ("[03] > [01] > [02]", 3, [3, 1, 2], {}),
    ("[2]>[1]>[3]>", 3, [2, 1, 3], {}),
    ("2.5 > 1 > 3", 3, [1, 3, 2], {"no_brackets": 1, "extra_text": 1, "missing": 1}),
    ("[1] > [2] > [3] (passage 4 is irrelevant)", 3, [1, 2, 3], {"extra_text": 1}),
    ("[2] | [3] | [1]", 3, [2, 3, 1], {}),
]


@pytest.mark.parametrize("text, n, expected, repairs", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_a_model_answer_becomes_a_valid_permutation(text, n, expected, repairs):
    order, found = parse_permutation(text, n)
    assert [i + 1 for i in order] == expected
    assert sorted(order) == list(range(n))
    assert dict(found) == repairs


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 30
