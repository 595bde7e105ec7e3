"""Choosing the next token from logits: greedy, or seeded temperature / top-p sampling.

Sampling works in float64 on a copy of the logits; a NumPy ``Generator``
(``numpy.random.default_rng(seed)``) makes every draw reproducible.
"""
import math
import numbers

import numpy as np

from .errors import SwarefError, SwarefTypeError


class SamplingParams:
    """temperature (0 = greedy), top_p in (0, 1], seed (int or None)."""

    def __init__(self, temperature=1.0, top_p=1.0, seed=None):
        self.temperature = check_temperature(temperature)
        self.top_p = check_top_p(top_p)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
            raise SwarefError("argument", f"seed must be an int >= 0 or None, got {seed!r}")
        self.seed = seed


def check_temperature(t):
    if isinstance(t, bool) or not isinstance(t, numbers.Real) or not math.isfinite(t) or t < 0:
        raise SwarefError("argument", f"temperature must be a finite number >= 0 (0 = greedy), got {t!r}")
    return float(t)


def check_top_p(p):
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 < p <= 1:
        raise SwarefError("argument", f"top_p must be a number in (0, 1], got {p!r}")
    return float(p)


def _check_logits(logits):
    arr = np.asarray(logits)
    if arr.ndim != 1 or arr.size < 1 or not np.issubdtype(arr.dtype, np.floating):
        raise SwarefTypeError("argument", f"logits must be a non-empty 1-D float array [V], got shape "
                                          f"{arr.shape} and dtype {arr.dtype}")
    if np.isnan(arr).any():
        raise SwarefError("argument", f"logits contain NaN (first at index {int(np.argmax(np.isnan(arr)))})")
    return arr


def greedy(logits):
    """logits: [V] -> the index of the largest logit (the first one on ties)."""
    return int(np.argmax(_check_logits(logits)))


def softmax(logits, temperature=1.0):
    """logits: [V] -> probabilities [V] float64 of softmax(logits / temperature), temperature > 0."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max()
    p = np.exp(z)
    return p / p.sum()


def top_p_filter(probs, top_p):
    """probs: [V] -> [V], renormalised over the nucleus.

    The nucleus is the smallest set of most probable tokens whose mass reaches
    top_p (ties broken by lower index); the token that crosses top_p is kept.
    """
    if top_p >= 1.0:
        return probs
    order = np.argsort(-probs, kind="stable")
    cum = np.cumsum(probs[order])
    # Keep every token whose preceding mass is still below top_p.
    keep = order[: int(np.searchsorted(cum, top_p, side="left")) + 1]
    out = np.zeros_like(probs)
    out[keep] = probs[keep]
    return out / out.sum()


def sample(logits, rng, temperature=1.0, top_p=1.0):
    """logits: [V] -> a token id drawn from softmax(logits / T) restricted to the top-p nucleus.

    temperature 0 means greedy (no draw from rng).
    """
    logits = _check_logits(logits)
    temperature = check_temperature(temperature)
    top_p = check_top_p(top_p)
    if temperature == 0.0:
        return int(np.argmax(logits))
    p = top_p_filter(softmax(logits, temperature), top_p)
    # Inverse-CDF draw: one uniform per token, so a seed fixes the whole sequence.
    u = rng.random()
    idx = int(np.searchsorted(np.cumsum(p), u * p.sum(), side="right"))
    return min(idx, len(p) - 1)


def make_sampler(params, n_sequences=1):
    """A ``pick(logits, b)`` callable for ``swaref.model.generate``.

    Sequence b draws from its own generator, derived from (seed, b), so its
    tokens do not depend on how many other sequences run beside it.
    temperature 0 -> greedy.
    """
    if params is None or params.temperature == 0.0:
        return lambda logits, b: greedy(logits)
    rngs = {}

    def pick(logits, b):
        if b not in rngs:
            rngs[b] = (np.random.default_rng([params.seed, b]) if params.seed is not None
                       else np.random.default_rng())
        return sample(logits, rngs[b], params.temperature, params.top_p)

    return pick
