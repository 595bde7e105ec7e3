"""swaref.models.sampling: the nucleus, seeded draws, and the defined behaviour on non-finite logits
and extreme temperatures (hand-computed expectations)."""
import numpy as np
import pytest

from oracle import assert_close

from swaref.errors import SwarefError
from swaref.models import sampling as S


def test_top_p_keeps_the_smallest_nucleus():
    p = np.array([0.1, 0.4, 0.05, 0.3, 0.15])
    for top_p, keep in [(0.35, {1}), (0.4, {1}), (0.41, {1, 3}), (0.7, {1, 3}), (0.85, {1, 3, 4}), (1.0, set(range(5)))]:
        got = S.top_p_filter(p, top_p)
        assert set(np.nonzero(got)[0]) == keep, (top_p, got)
        assert abs(got.sum() - 1) < 1e-12
        assert_close(got[list(keep)], p[list(keep)] / p[list(keep)].sum(), atol=1e-12)

def test_sampling_is_seeded_and_follows_the_distribution():
    logits = np.log(np.array([0.5, 0.3, 0.2, 1e-9]))
    def draw(seed, n):
        rng = np.random.default_rng(seed)
        return [S.sample(logits, rng, 1.0) for _ in range(n)]
    assert draw(5, 30) == draw(5, 30) != draw(6, 30)
    rng = np.random.default_rng(42)
    counts = np.bincount([S.sample(logits, rng, 1.0) for _ in range(4000)], minlength=4) / 4000
    assert np.abs(counts - [0.5, 0.3, 0.2, 0.0]).max() < 0.03, counts
    rng = np.random.default_rng(42)
    assert {S.sample(logits, rng, 1.0, top_p=0.45) for _ in range(200)} == {0}
    assert S.sample(logits, None, temperature=0.0) == 0 == S.greedy(logits)
    with pytest.raises(SwarefError, match="top_p"):
        S.sample(logits, rng, 1.0, top_p=0.0)
    with pytest.raises(SwarefError, match="temperature"):
        S.SamplingParams(temperature=-1)
    with pytest.raises(SwarefError, match="NaN"):
        S.greedy(np.array([0.0, np.nan]))


# ------------------------------ non-finite logits and extreme temperatures (issue 8, item 9)

INF = np.inf


def test_softmax_matches_hand_computed_probabilities():
    # exp(0) : exp(ln 2) : exp(ln 5) = 1 : 2 : 5; at T = 1/2 the weights square: 1 : 4 : 25.
    logits = np.log([1.0, 2.0, 5.0])
    assert_close(S.softmax(logits), [1 / 8, 2 / 8, 5 / 8], atol=1e-15)
    assert_close(S.softmax(logits, 0.5), [1 / 30, 4 / 30, 25 / 30], atol=1e-15)


def test_plus_inf_logits_share_all_the_mass():
    assert S.softmax([INF, 1.0, 1.0]).tolist() == [1.0, 0.0, 0.0]
    assert S.softmax([1.0, INF, -INF, INF]).tolist() == [0.0, 0.5, 0.0, 0.5]
    assert S.greedy(np.array([INF, 1.0, 1.0])) == 0 and S.greedy(np.array([1.0, INF, INF])) == 1
    for seed in range(50):
        assert S.sample(np.array([INF, 1.0, 1.0]), np.random.default_rng(seed)) == 0
    rng = np.random.default_rng(7)
    draws = np.bincount([S.sample(np.array([1.0, INF, -INF, INF]), rng, 0.7) for _ in range(2000)], minlength=4)
    assert draws[0] == draws[2] == 0 and abs(draws[1] / 2000 - 0.5) < 0.05, draws


def test_minus_inf_logits_are_never_drawn():
    assert_close(S.softmax([-INF, 0.0, np.log(3.0)]), [0.0, 0.25, 0.75], atol=1e-15)
    for seed in range(50):
        assert S.sample(np.array([-INF, 0.0, -INF]), np.random.default_rng(seed), 5.0) == 1


def test_a_temperature_too_small_to_divide_by_is_the_zero_temperature_limit():
    # (l - max) / 1e-320 overflows to -inf for every non-maximal logit: its weight is exactly 0.
    for seed in range(50):
        assert S.sample(np.array([3.0, 2.0, 1.0]), np.random.default_rng(seed), temperature=1e-320) == 0
        assert S.sample(np.array([1.0, 2.0, 3.0], dtype=np.float32), np.random.default_rng(seed), 5e-324) == 2
    # Tied maxima share the mass, as they do for every small finite temperature.
    assert S.softmax([3.0, 3.0, 1.0], 1e-320).tolist() == [0.5, 0.5, 0.0]
    # A huge (finite) temperature flattens the distribution instead of failing.
    assert_close(S.softmax([3.0, 2.0, 1.0], 1e300), [1 / 3] * 3, atol=1e-12)


@pytest.mark.parametrize("logits,match", [([0.0, np.nan], "NaN"), ([-INF, -INF], "all -inf"),
                                          ([[1.0, 2.0]], "1-D"), ([1, 2], "float")])
def test_logits_without_a_distribution_are_rejected(logits, match):
    arr = np.array(logits)
    for f in (S.greedy, S.softmax, lambda x: S.sample(x, np.random.default_rng(0))):
        with pytest.raises(SwarefError, match=match):
            f(arr)


@pytest.mark.parametrize("t", [INF, np.nan, -1e-9, True])
def test_a_temperature_that_is_not_a_finite_number_ge_0_is_rejected(t):
    with pytest.raises(SwarefError, match="temperature"):
        S.sample(np.array([1.0, 2.0]), np.random.default_rng(0), temperature=t)
    with pytest.raises(SwarefError, match="temperature"):
        S.SamplingParams(temperature=t)


def test_sampling_params_are_frozen_and_seed_is_an_int():
    with pytest.raises(SwarefError, match="seed"):
        S.SamplingParams(seed=1.5)
    with pytest.raises(SwarefError, match="seed"):
        S.SamplingParams(seed=-1)
    with pytest.raises(AttributeError):
        S.SamplingParams().temperature = 2.0
