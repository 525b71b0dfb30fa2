"""Read a ranking out of a model's text, always ending with a valid permutation.

Listwise models are asked for ``[3] > [1] > [2]`` and answer with variations: spaces, bare
numbers, prose around the list, a ``<think>…</think>`` block first, an identifier twice, one
that does not exist, some left out. ``parse_permutation`` keeps the first mention of each valid
identifier in order, appends the ones never mentioned in their input order, and counts each
kind of repair so the stage can report it and refuse a model that mostly fails to comply.
"""

from __future__ import annotations

import re
from collections import Counter

THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)
BRACKETED = re.compile(r"\[\s*(\d+)\s*\]")
BARE = re.compile(r"(?<![\w.])(\d+)(?![\w.])")

#: the kinds of repair, in the order the manifest lists them
REPAIRS = ("think_block", "no_brackets", "extra_text", "duplicate", "out_of_range", "missing", "no_ranking")


def parse_permutation(text: str, n: int) -> tuple[list[int], Counter]:
    """0-based permutation of ``n`` items from a model's answer, and the repairs it needed."""
    repairs: Counter = Counter()
    if THINK.search(text):
        repairs["think_block"] += 1
        text = THINK.sub(" ", text)
    numbers = [int(m) for m in BRACKETED.findall(text)]
    if numbers:
        rest = BRACKETED.sub(" ", text)
    else:
        numbers = [int(m) for m in BARE.findall(text)]
        if numbers:
            repairs["no_brackets"] += 1
        rest = BARE.sub(" ", text)
    if re.search(r"[^\s>,;|\-]", rest):
        repairs["extra_text"] += 1
    order: list[int] = []
    for number in numbers:
        if not 1 <= number <= n:
            repairs["out_of_range"] += 1
        elif number - 1 in order:
            repairs["duplicate"] += 1
        else:
            order.append(number - 1)
    if not order:
        repairs["no_ranking"] += 1
    missing = [i for i in range(n) if i not in set(order)]
    if missing and order:
        repairs["missing"] += len(missing)
    return order + missing, repairs
