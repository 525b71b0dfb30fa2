"""Properties that hold for every input hypothesis can think of: run files, permutations, fusion."""

from __future__ import annotations

import struct
from pathlib import Path
from tempfile import TemporaryDirectory

from hypothesis import given, settings
from hypothesis import strategies as st

from rerankcli.core.runs import Run, read_run, write_run
from rerankcli.rerank.permutation import parse_permutation
from rerankcli.retrieve.fusion import comb, rrf

# Ids are what a TREC line can carry: no white space (str.split's idea of it), valid UTF-8, and
# no U+FEFF: at the start of a file every reader (this one too) takes it for a byte-order mark.
ID_CHARS = st.characters(blacklist_categories=("Cs",)).filter(lambda c: not c.isspace() and c != "\ufeff")
IDS = st.text(ID_CHARS, min_size=1, max_size=10)
SCORES = st.floats(allow_nan=False, allow_infinity=False)
RUNS = st.dictionaries(IDS, st.dictionaries(IDS, SCORES, min_size=1, max_size=8), min_size=1, max_size=5).map(Run)
SMALL_RUNS = st.dictionaries(st.sampled_from(["q1", "q2"]),
                             st.dictionaries(st.sampled_from([f"d{i}" for i in range(12)]),
                                             st.floats(-100, 100), min_size=1),
                             min_size=1).map(Run)


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def round_trip(run: Run) -> tuple[Run, bytes]:
    with TemporaryDirectory() as folder:
        path = Path(folder) / "run.trec"
        write_run(run, path, "prop")
        return read_run(path), path.read_bytes()


@given(RUNS)
def test_a_run_reads_back_exactly_as_written(run: Run) -> None:
    back, _ = round_trip(run)
    assert back.scores.keys() == run.scores.keys()
    for qid, docs in run.scores.items():
        assert back.scores[qid].keys() == docs.keys()
        assert all(bits(back.scores[qid][d]) == bits(s) for d, s in docs.items())  # -0.0, subnormals too


@given(RUNS)
def test_writing_a_read_run_again_gives_the_same_bytes(run: Run) -> None:
    back, first = round_trip(run)
    assert round_trip(back)[1] == first


@given(RUNS)
def test_ranks_count_from_one_and_scores_never_rise(run: Run) -> None:
    _, text = round_trip(run)
    by_query: dict[str, list[tuple[int, float]]] = {}
    for line in text.decode().splitlines():
        qid, _, _, rank, score, _ = line.split()
        by_query.setdefault(qid, []).append((int(rank), float(score)))
    for rows in by_query.values():
        assert [r for r, _ in rows] == list(range(1, len(rows) + 1))
        assert all(a >= b for (_, a), (_, b) in zip(rows, rows[1:]))


# -- permutation repair ----------------------------------------------------------------------
PERMUTATIONS = st.integers(1, 30).flatmap(lambda n: st.permutations(list(range(n))))


@given(st.text(max_size=300), st.integers(1, 40))
def test_any_answer_becomes_a_permutation(text: str, n: int) -> None:
    order, _ = parse_permutation(text, n)
    assert sorted(order) == list(range(n))


@given(PERMUTATIONS)
def test_a_well_formed_answer_needs_no_repair(permutation: list[int]) -> None:
    text = " > ".join(f"[{i + 1}]" for i in permutation)
    assert parse_permutation(text, len(permutation)) == (permutation, {})


@given(PERMUTATIONS, st.sampled_from(["<think>[1] > [2]</think>\n{}", "Ranking: {}. Hope this helps!",
                                      "{}", "{} [99] [0]"]), st.booleans())
def test_noise_around_a_full_ranking_does_not_change_it(permutation: list[int], frame: str, bare: bool) -> None:
    body = " > ".join(str(i + 1) if bare else f"[{i + 1}]" for i in permutation)
    order, _ = parse_permutation(frame.format(body), len(permutation))
    # bracketed ids win over bare numbers: with only [99] and [0] bracketed, no valid id is left
    expected = list(range(len(permutation))) if bare and "[99]" in frame else permutation
    assert order == expected


@given(PERMUTATIONS, st.data())
def test_a_partial_ranking_keeps_its_order_and_appends_the_rest(permutation: list[int], data) -> None:
    shown = data.draw(st.integers(1, len(permutation)))
    text = " > ".join(f"[{i + 1}]" for i in permutation[:shown] + permutation[:shown])  # repeated, too
    order, repairs = parse_permutation(text, len(permutation))
    rest = sorted(set(range(len(permutation))) - set(permutation[:shown]))
    assert order == permutation[:shown] + rest
    assert repairs["missing"] == len(rest) and repairs["duplicate"] == shown


# -- fusion ------------------------------------------------------------------------------
@given(st.lists(SMALL_RUNS, min_size=1, max_size=4), st.floats(1, 100))
def test_rrf_keeps_every_document_with_a_positive_score(runs: list[Run], k: float) -> None:
    fused = rrf(runs, [1.0] * len(runs), k)
    for qid in {q for r in runs for q in r.scores}:
        assert fused.scores[qid].keys() == {d for r in runs for d in r.scores.get(qid, {})}
        assert all(0 < s <= len(runs) / (k + 1) * (1 + 1e-12) for s in fused.scores[qid].values())  # float sums


@given(SMALL_RUNS, st.floats(0.1, 10))
def test_rrf_of_one_run_keeps_its_ranking(run: Run, weight: float) -> None:
    fused = rrf([run], [weight])
    assert all([d for d, _ in fused.ranked(q)] == [d for d, _ in run.ranked(q)] for q in run.scores)


@given(SMALL_RUNS, SMALL_RUNS)
def test_rrf_does_not_depend_on_the_order_of_its_inputs(a: Run, b: Run) -> None:
    assert rrf([a, b], [1.0, 2.0]) == rrf([b, a], [2.0, 1.0])


@given(st.lists(SMALL_RUNS, min_size=2, max_size=4))
def test_a_document_first_in_every_run_is_first_after_rrf(runs: list[Run]) -> None:
    for run in runs:
        for docs in run.scores.values():
            docs["top"] = 1000.0
    fused = rrf(runs, [1.0] * len(runs))
    assert all(fused.ranked(q)[0][0] == "top" for q in fused.scores)


@given(SMALL_RUNS, st.sampled_from(["minmax", "zscore", "none"]))
def test_comb_of_one_run_never_inverts_its_order(run: Run, how: str) -> None:
    fused = comb([run], [1.0], how, mnz=False)
    for qid, docs in run.scores.items():
        for a, sa in docs.items():
            for b, sb in docs.items():
                if sa > sb:
                    assert fused.scores[qid][a] >= fused.scores[qid][b]


@given(st.lists(SMALL_RUNS, min_size=1, max_size=4))
@settings(max_examples=50)
def test_combmnz_is_combsum_times_the_runs_that_found_the_document(runs: list[Run]) -> None:
    weights = [1.0] * len(runs)
    total, mnz = comb(runs, weights, "minmax", mnz=False), comb(runs, weights, "minmax", mnz=True)
    for qid, docs in mnz.scores.items():
        for doc, score in docs.items():
            hits = sum(doc in r.scores.get(qid, {}) for r in runs)
            assert score == total.scores[qid][doc] * hits
            assert 0 <= total.scores[qid][doc] <= len(runs)
