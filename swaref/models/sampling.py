"""Choosing the next token from logits: greedy, or seeded temperature / top-p sampling.

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
import numbers
from dataclasses import dataclass

import numpy as np

from .. import _validate as V
from ..errors import SwarefError, SwarefTypeError


def check_temperature(t):
    if isinstance(t, bool) or not isinstance(t, numbers.Real) or not math.isfinite(t) or t < 0:
        raise SwarefError("argument", f"temperature must be a finite number >= 0 (0 = greedy), got {t!r}")
    return float(t)


def check_top_p(p):
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 < p <= 1:
        raise SwarefError("argument", f"top_p must be a number in (0, 1], got {p!r}")
    return float(p)


@dataclass(frozen=True)
class SamplingParams:
    """temperature (0 = greedy), top_p in (0, 1], seed (an int >= 0 or None), validated when made."""

    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = None

    def __post_init__(self):
        object.__setattr__(self, "temperature", check_temperature(self.temperature))
        object.__setattr__(self, "top_p", check_top_p(self.top_p))
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


def sample(logits, rng, temperature=1.0, top_p=1.0):
    """logits: [V] -> a token id drawn from softmax(logits / T) restricted to the top-p nucleus.

    temperature 0 means greedy (no draw from rng).  A token of probability 0
    is never returned.
    """
    logits = check_logits(logits)
    temperature = check_temperature(temperature)
    top_p = check_top_p(top_p)
    if temperature == 0.0:
        return int(np.argmax(logits))
    p = top_p_filter(softmax(logits, temperature), top_p)
    # Inverse-CDF draw: one uniform per token, so a seed fixes the whole sequence.
    u = rng.random()
    idx = int(np.searchsorted(np.cumsum(p), u * p.sum(), side="right"))
    # Rounding can put u * sum past the last partial sum: fall back to the last token that has mass.
    return min(idx, int(np.flatnonzero(p)[-1]))


def make_sampler(params, n_sequences=1):
    """A ``pick(logits, b)`` callable for ``generation.generate``.

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
