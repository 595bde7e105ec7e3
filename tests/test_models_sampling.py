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


# ------------------------------ top-k, min-p, the order of the filters, log-probabilities (issue 11 section 4)

P4 = np.array([0.5, 0.25, 0.15, 0.1])


def test_top_k_keeps_the_k_largest_logits_and_every_tie_of_the_kth():
    logits = np.array([1.0, 3.0, 3.0, 2.0, -INF])
    # By hand: transformers removes logits < the k-th largest, so a tie with the k-th stays.
    assert S.top_k_mask(logits, 1).tolist() == [False, True, True, False, False]
    assert S.top_k_mask(logits, 2).tolist() == [False, True, True, False, False]
    assert S.top_k_mask(logits, 3).tolist() == [False, True, True, True, False]
    assert S.top_k_mask(logits, 0).all() and S.top_k_mask(logits, 99).all()
    assert_close(S.distribution(np.log(P4), top_k=2), [2 / 3, 1 / 3, 0, 0], atol=1e-15)


def test_min_p_keeps_tokens_at_least_min_p_times_the_most_likely():
    # max 0.5: min_p 0.25 -> threshold 0.125 keeps 0.5, 0.25, 0.15; min_p 0.6 -> 0.3 keeps 0.5 alone.
    assert_close(S.min_p_filter(P4, 0.25), [0.5 / 0.9, 0.25 / 0.9, 0.15 / 0.9, 0], atol=1e-15)
    assert S.min_p_filter(P4, 0.6).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert S.min_p_filter(P4, 0.0) is P4
    assert S.min_p_filter(P4, 1.0).tolist() == [1.0, 0.0, 0.0, 0.0]   # the top token always stays
    assert_close(S.distribution(np.log(P4), min_p=0.25), [0.5 / 0.9, 0.25 / 0.9, 0.15 / 0.9, 0], atol=1e-15)


def test_filters_apply_in_transformers_order_temperature_top_k_top_p_min_p():
    logits = np.log(P4)
    # top-k 3 first renormalises to [5, 2.5, 1.5] / 9; top-p 0.8 then keeps a token while the mass
    # before it is < 0.8: 0, 0.556 kept, 0.833 not -> [2/3, 1/3].  (top-p first would keep three.)
    assert_close(S.distribution(logits, top_k=3, top_p=0.8), [2 / 3, 1 / 3, 0, 0], atol=1e-15)
    # Temperature 1/2 squares the weights first: [.25, .0625, .0225, .01] / .345 = [.725, .181, ...];
    # top-p 0.6 then keeps token 0 alone.  (Temperature after top-p would give [0.8, 0.2].)
    assert S.distribution(logits, temperature=0.5, top_p=0.6).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert_close(S.distribution(logits, temperature=0.5, top_p=0.75), [0.8, 0.2, 0, 0], atol=1e-15)
    # min-p last, on what top-p left: [2/3, 1/3], min_p 0.6 -> threshold 0.4 keeps token 0 alone.
    assert S.distribution(logits, top_k=3, top_p=0.8, min_p=0.6).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert_close(S.distribution(logits, top_k=3, top_p=0.8, min_p=0.4), [2 / 3, 1 / 3, 0, 0], atol=1e-15)


def test_sampled_tokens_follow_the_filtered_distribution():
    logits = np.log(P4)
    rng = np.random.default_rng(3)
    draws = np.bincount([S.sample(logits, rng, 1.0, top_k=3, top_p=0.8) for _ in range(3000)], minlength=4) / 3000
    assert draws[2] == draws[3] == 0 and abs(draws[0] - 2 / 3) < 0.03, draws
    rng = np.random.default_rng(3)
    assert {S.sample(logits, rng, 2.0, min_p=0.6) for _ in range(100)} <= {0, 1}


def test_log_probability_is_under_the_distribution_drawn_from():
    logits = np.log(np.array([0.5, 0.3, 0.2]))
    tok, lp = S.sample_with_logprob(logits, None, temperature=0.0)      # greedy: the model's own softmax
    assert tok == 0 and abs(lp - np.log(0.5)) < 1e-12
    tok, lp = S.sample_with_logprob(logits, np.random.default_rng(0), 1.0, top_k=1)
    assert tok == 0 and lp == 0.0                                       # one token left: probability 1
    for seed in range(20):
        tok, lp = S.sample_with_logprob(logits, np.random.default_rng(seed), 1.0, top_k=2)
        assert abs(lp - np.log([0.625, 0.375][tok])) < 1e-12           # 0.5 / 0.8 and 0.3 / 0.8
    tok, lp = S.sample_with_logprob(np.array([INF, 1.0, INF]), None, 0.0)
    assert tok == 0 and abs(lp - np.log(0.5)) < 1e-15


def test_sampler_records_each_sequences_log_probabilities_and_keeps_the_old_draws():
    logits = np.log(np.array([0.4, 0.3, 0.2, 0.1]))
    params = S.SamplingParams(temperature=0.8, top_p=0.9, seed=11)
    pick = S.make_sampler(params)
    toks = [pick(logits, b) for b in (0, 1, 0, 1, 0)]
    assert len(pick.logprobs[0]) == 3 and len(pick.logprobs[1]) == 2
    # The same draws written out here: softmax(l / 0.8), the nucleus 0.9, one uniform per token per sequence.
    w = np.exp(np.log([0.4, 0.3, 0.2, 0.1]) / 0.8)
    w /= w.sum()
    keep = np.cumsum(w) - w < 0.9
    q = np.where(keep, w, 0) / np.where(keep, w, 0).sum()
    rngs = {b: np.random.default_rng([11, b]) for b in (0, 1)}
    want = [int(np.searchsorted(np.cumsum(q), rngs[b].random(), side="right")) for b in (0, 1, 0, 1, 0)]
    assert toks == want
    assert_close(np.array(pick.logprobs[0]), np.log(q[[want[0], want[2], want[4]]]), atol=1e-12)


@pytest.mark.parametrize("kw,match", [({"top_k": -1}, "top_k must be an int >= 0"), ({"top_k": 1.5}, "top_k"),
                                      ({"top_k": True}, "top_k"), ({"min_p": -0.1}, "min_p"),
                                      ({"min_p": 1.5}, "min_p"), ({"min_p": np.nan}, "min_p")])
def test_top_k_and_min_p_out_of_range_are_refused_naming_them(kw, match):
    with pytest.raises(SwarefError, match=match):
        S.SamplingParams(**kw)
    with pytest.raises(SwarefError, match=match):
        S.sample(np.array([1.0, 2.0]), np.random.default_rng(0), 1.0, **kw)
