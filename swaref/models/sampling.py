"""Choosing the next token from logits: greedy, or seeded sampling with temperature, top-k, top-p, min-p.

The filters are transformers' logits processors (``transformers/generation/logits_process.py``),
applied in the order its ``generate`` applies them: temperature, then top-k, then top-p, then
min-p, each on what the previous one left (``distribution``).  The token is drawn from the
result, and ``Sampler`` records the log-probability of each chosen token under it.

Sampling works in float64 on a copy of the logits; a NumPy ``Generator``
(``numpy.random.default_rng(seed)``) makes every draw reproducible.

Non-finite logits and extreme temperatures have one defined behaviour, the
limit of the finite case:

* NaN anywhere is rejected (SwarefError, kind "argument"), as are logits that
  are all -inf (no token would have any probability);
* a -inf logit has probability 0 and is never drawn;
* if any logit is +inf, the +inf logits share all the probability equally
  (each finite one gets 0): the limit of those logits growing together;
* probabilities are exp((l - max l) / T) normalised.  Subtracting the maximum
  first means nothing overflows however small T is: when T is so small that
  every non-maximal weight underflows to 0 (``sample([3, 2, 1], rng,
  temperature=1e-320)``), the maximal logits share the mass equally, the
  T -> 0 limit, which is greedy when the maximum is unique.  Temperature 0 is
  greedy (the first maximum, no draw); temperature must be finite.
"""
import math
from dataclasses import dataclass

import numpy as np

from .. import _validate as V
from ..errors import SwarefError, SwarefTypeError


def check_temperature(t):
    if not V.is_real(t) or not math.isfinite(t) or t < 0:
        raise SwarefError("argument", f"temperature must be a finite number >= 0 (0 = greedy), got {t!r}")
    return float(t)


def check_top_p(p):
    if not V.is_real(p) or not 0 < p <= 1:
        raise SwarefError("argument", f"top_p must be a number in (0, 1], got {p!r}")
    return float(p)


def check_top_k(k):
    """top_k: an int >= 0 (0 = off, as transformers' ``top_k=0``)."""
    return V.check_int(k, "top_k", minimum=0)


def check_min_p(p):
    if not V.is_real(p) or not 0 <= p <= 1:
        raise SwarefError("argument", f"min_p must be a number in [0, 1] (0 = off), got {p!r}")
    return float(p)


@dataclass(frozen=True)
class SamplingParams:
    """temperature (0 = greedy), top_p in (0, 1], seed (an int >= 0 or None), top_k (an int >= 0,
    0 = off), min_p in [0, 1] (0 = off); validated when made."""

    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = None
    top_k: int = 0
    min_p: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "temperature", check_temperature(self.temperature))
        object.__setattr__(self, "top_p", check_top_p(self.top_p))
        object.__setattr__(self, "top_k", check_top_k(self.top_k))
        object.__setattr__(self, "min_p", check_min_p(self.min_p))
        if self.seed is not None:
            object.__setattr__(self, "seed", V.check_int(self.seed, "seed", minimum=0))


def check_logits(logits):
    """logits: [V] float, no NaN, at least one entry > -inf  ->  the array."""
    arr = np.asarray(logits)
    if arr.ndim != 1 or arr.size < 1 or not np.issubdtype(arr.dtype, np.floating):
        raise SwarefTypeError("argument", f"logits must be a non-empty 1-D float array [V], got shape "
                                          f"{arr.shape} and dtype {arr.dtype}")
    if np.isnan(arr).any():
        raise SwarefError("argument", f"logits contain NaN (first at index {int(np.argmax(np.isnan(arr)))})")
    if np.all(arr == -np.inf):
        raise SwarefError("argument", "logits are all -inf: no token has any probability")
    return arr


def greedy(logits):
    """logits: [V] -> the index of the largest logit (the first one on ties; +inf is the largest)."""
    return int(np.argmax(check_logits(logits)))


def softmax(logits, temperature=1.0):
    """logits: [V] -> probabilities [V] float64 of softmax(logits / temperature), temperature > 0.

    +inf logits share all the mass; otherwise exp((l - max) / T), which cannot
    overflow for any T > 0 (see the module docstring).
    """
    z = check_logits(logits).astype(np.float64)
    top = z.max()
    if top == np.inf:
        p = (z == np.inf).astype(np.float64)
    else:
        with np.errstate(over="ignore", under="ignore"):  # (l - max) / T -> -inf: probability 0, as defined
            p = np.exp((z - top) / temperature)
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


def top_k_mask(logits, top_k):
    """logits: [V] -> bool [V], True for the tokens top-k keeps (top_k 0 keeps all).

    transformers' ``TopKLogitsWarper``: a token is removed when its logit is
    below the k-th largest, so every token tied with the k-th is kept.
    """
    if top_k == 0 or top_k >= len(logits):
        return np.ones(len(logits), dtype=bool)
    kth = np.partition(logits, len(logits) - top_k)[len(logits) - top_k]
    return logits >= kth


def min_p_filter(probs, min_p):
    """probs: [V] -> [V], renormalised over the tokens with probability >= min_p * max(probs).

    transformers' ``MinPLogitsWarper`` (it removes ``probs < min_p * max``); the
    most probable token always stays.
    """
    if min_p <= 0.0:
        return probs
    out = np.where(probs >= min_p * probs.max(), probs, 0.0)
    return out / out.sum()


def distribution(logits, temperature=1.0, top_p=1.0, top_k=0, min_p=0.0):
    """logits: [V] -> the probabilities [V] float64 that ``sample`` draws from (temperature > 0).

    transformers' order: temperature, top-k, top-p, min-p, each on what the
    previous one left, renormalised.  Top-k compares the logits (dividing by
    T > 0 keeps their order and their ties); top-p and min-p compare
    probabilities.
    """
    logits = check_logits(logits)
    temperature, top_p = check_temperature(temperature), check_top_p(top_p)
    top_k, min_p = check_top_k(top_k), check_min_p(min_p)
    if temperature == 0.0:
        raise SwarefError("argument", "distribution needs a temperature > 0 (0 is greedy: no distribution)")
    p = softmax(logits, temperature)
    if top_k:
        p = np.where(top_k_mask(logits, top_k), p, 0.0)  # the largest logit is kept: its weight is 1
        p = p / p.sum()
    return min_p_filter(top_p_filter(p, top_p), min_p)


def draw(p, rng):
    """An index drawn from probabilities p [V] with one uniform from rng (inverse CDF); never one of mass 0."""
    u = rng.random()
    idx = int(np.searchsorted(np.cumsum(p), u * p.sum(), side="right"))
    # Rounding can put u * sum past the last partial sum: fall back to the last token that has mass.
    return min(idx, int(np.flatnonzero(p)[-1]))


def sample(logits, rng, temperature=1.0, top_p=1.0, top_k=0, min_p=0.0):
    """logits: [V] -> a token id drawn from ``distribution(logits, temperature, top_p, top_k, min_p)``.

    temperature 0 means greedy (no draw from rng).  A token of probability 0
    is never returned.
    """
    return sample_with_logprob(logits, rng, temperature, top_p, top_k, min_p)[0]


def log_softmax(logits):
    """logits: [V] -> log softmax(logits) [V] float64 (+inf logits share the mass; -inf gives -inf)."""
    z = check_logits(logits).astype(np.float64)
    top = z.max()
    if top == np.inf:
        with np.errstate(divide="ignore"):
            return np.log((z == np.inf) / np.count_nonzero(z == np.inf))
    with np.errstate(under="ignore"):
        return z - top - np.log(np.sum(np.exp(z - top)))


def sample_with_logprob(logits, rng, temperature=1.0, top_p=1.0, top_k=0, min_p=0.0):
    """(token id, its log-probability) under the distribution it was drawn from.

    Sampling (temperature > 0): log p[token] of ``distribution(...)``, the
    filtered and renormalised distribution.  Greedy (temperature 0, no draw):
    the model's own log softmax(logits) at temperature 1 (the point mass
    greedy "samples" would always say 0).
    """
    logits = check_logits(logits)
    temperature = check_temperature(temperature)
    if temperature == 0.0:
        check_top_p(top_p), check_top_k(top_k), check_min_p(min_p)
        tok = int(np.argmax(logits))
        return tok, float(log_softmax(logits)[tok])
    p = distribution(logits, temperature, top_p, top_k, min_p)
    tok = draw(p, rng)
    return tok, float(np.log(p[tok]))


class Sampler:
    """A ``pick(logits, b)`` callable for ``generation.generate`` that also records, in
    ``logprobs[b]``, each chosen token's log-probability (see ``sample_with_logprob``).

    Sequence b draws from its own generator, derived from (seed, b), so its
    tokens do not depend on how many other sequences run beside it.
    temperature 0 -> greedy.
    """

    def __init__(self, params=None):
        self.params = params if params is not None else SamplingParams(temperature=0.0)
        if not isinstance(self.params, SamplingParams):
            raise SwarefTypeError("argument", f"params must be a SamplingParams, got {type(params).__name__}")
        self.logprobs = {}
        self._rngs = {}

    def _rng(self, b):
        if b not in self._rngs:
            seed = self.params.seed
            self._rngs[b] = np.random.default_rng([seed, b]) if seed is not None else np.random.default_rng()
        return self._rngs[b]

    def __call__(self, logits, b):
        p = self.params
        rng = self._rng(b) if p.temperature > 0 else None
        tok, lp = sample_with_logprob(logits, rng, p.temperature, p.top_p, p.top_k, p.min_p)
        self.logprobs.setdefault(b, []).append(lp)
        return tok


def make_sampler(params, n_sequences=1):
    """A ``pick(logits, b)`` callable for ``generation.generate`` (a ``Sampler``; None -> greedy).

    Sequence b draws from its own generator, derived from (seed, b), so its
    tokens do not depend on how many other sequences run beside it.
    temperature 0 -> greedy.
    """
    return Sampler(params)
