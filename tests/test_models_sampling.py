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
