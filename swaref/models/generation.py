"""Running a model: per-layer caches, the forward pass, chunked prefill and batched generation.

token embedding (x embed_scale) -> L x decoder_layer [norm -> GQA attention
(RoPE at absolute positions, rolling buffer cache per layer) -> residual ->
norm -> MLP -> residual, with the norm slots and parallel blocks the config
declares] -> norm -> LM head (x logit_scale, soft-capped by final_softcap).  One path for every
architecture; what differs is declared in ``architectures`` and ``ModelConfig``.

Order that matters:

* keys are rotated by RoPE at their *absolute* positions before they enter the
  cache, so a cached key never needs re-rotating when the ring wraps;
* a prompt goes through the whole model chunk by chunk (default chunk W): each
  layer's attention for a chunk uses ``swaref.prefill`` (attend to cache +
  chunk, then write), and generated tokens use ``swaref.decode_step`` (write,
  then attend), so every layer shares the one schedule;
* every check any layer's attention would make (tokens, backend, every layer's
  cache of every sequence, the positions) runs before layer 0 writes, so a
  rejected call leaves all caches bitwise unchanged.

Dimension names: T tokens in a chunk, d hidden size, V vocabulary, Hkv heads,
D head_dim, W window, L layers, B sequences.
"""
import contextlib
import time
from dataclasses import dataclass

import numpy as np

from .. import _validate as V
from ..cache import RollingBufferCache, acquire, check_cache
from ..errors import SwarefError, SwarefTypeError
from ..prefill import check_cache_step, chunk_schedule
from .bf16 import as_float32
from .layers import decoder_layer, linear, norm
from .rope import StepRotations
from .sampling import greedy


@dataclass
class GenerationResult:
    """What ``generate`` returns: per-sequence new token ids and timings."""

    tokens: list            # B lists of new token ids
    finished_by_eos: list   # B bools
    prefill_tokens: int
    prefill_seconds: float
    decode_tokens: int
    decode_seconds: float
    cache_bytes: int


# --------------------------------------------------------------------- caches

def new_caches(model, max_len):
    """Fresh per-layer caches for one sequence of at most ``max_len`` tokens.

    A full-attention layer (window None) gets max_len slots.  A sliding layer
    gets a ring of W slots, or, when W > max_len, a plain buffer of max_len
    slots: a ring that is never filled never wraps, and with at most max_len <= W
    tokens the window excludes nothing, so the visible keys are the same while
    memory stays bounded by the tokens (a config with W = 10**12 needs no 10**12
    slots).  Such a buffer refuses a token past max_len.
    """
    max_len = V.check_int(max_len, "max_len", minimum=1)
    cfg = model.config
    # A cache too large for memory is refused by RollingBufferCache itself (a SwarefError naming the size).
    return [RollingBufferCache(w, cfg.n_kv_heads, cfg.head_dim, np.float32)
            if w is not None and w <= max_len else
            RollingBufferCache(None, cfg.n_kv_heads, cfg.head_dim, np.float32, capacity=max_len)
            for w in cfg.windows]


def cache_nbytes(caches):
    """Bytes held by a (nested) list of caches."""
    if isinstance(caches, RollingBufferCache):
        return caches.nbytes
    return sum(cache_nbytes(c) for c in caches)


def default_chunk_size(cfg):
    """The smallest sliding window (Mistral's suggestion: chunks of W), or None (whole prompt)."""
    ws = [w for w in cfg.windows if w is not None]
    return min(ws) if ws else None


# ----------------------------------------------------------------- validation

def check_tokens(tokens, vocab_size, name="tokens"):
    """Token ids as an int64 array [T], T >= 1, each in [0, V)."""
    arr = np.asarray(tokens)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise SwarefTypeError("argument", f"{name} must be integer token ids, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] < 1:
        raise SwarefError("shape", f"{name} must be a non-empty 1-D sequence of token ids, got shape {arr.shape}")
    bad = np.nonzero((arr < 0) | (arr >= vocab_size))[0]
    if bad.size:
        i = int(bad[0])
        raise SwarefError("argument", f"{name}[{i}] = {int(arr[i])} is outside the vocabulary [0, {vocab_size})")
    return arr.astype(np.int64)


def check_backend_available(backend):
    """A known backend that can run now (checked before any cache is written)."""
    V.check_backend(backend)
    if backend == "cython":
        # _backend imports the extension lazily: load it now, so that an unbuilt
        # swaref._core fails here (kind "backend") and not halfway through a batch.
        from .._backend import _core
        _core()
    return backend


def check_sequence_caches(seq_caches, cfg, n_new, backend="reference", name="caches"):
    """One sequence's L caches, checked for a step of ``n_new`` tokens; returns the shared start position.

    Runs every check that layer li's ``prefill`` / ``decode_step`` would make
    (type, dims, dtype, capacity, consecutive positions, int64 and the compiled
    kernel's position limit), for every layer, without writing.  Layer li takes a
    cache of its window W, or, for a sliding layer, a plain buffer (window None)
    of capacity <= W (see ``new_caches``).
    """
    if not isinstance(seq_caches, (list, tuple)) or len(seq_caches) != cfg.n_layers:
        raise SwarefError("cache", f"{name} must be a list of {cfg.n_layers} caches (one per layer), "
                                   f"got {type(seq_caches).__name__} of length "
                                   f"{len(seq_caches) if hasattr(seq_caches, '__len__') else '?'}")
    starts = set()
    for li, (c, w) in enumerate(zip(seq_caches, cfg.windows)):
        where = f"{name}[{li}]"
        check_cache(c, cfg.n_kv_heads, cfg.head_dim, np.dtype(np.float32), where)
        if c.window != w and not (c.window is None and w is not None and c.capacity <= w):
            raise SwarefError("cache", f"{where} is {c!r}; layer {li} needs window={w} (or, for a sliding layer, "
                                       f"window=None with capacity <= {w})")
        if c.window is None and c.n_seen + n_new > c.capacity:
            kind = "full attention" if w is None else f"window {w}, allocated for {c.capacity} tokens"
            raise SwarefError("cache", f"{where} ({kind}) holds {c.n_seen} of {c.capacity} tokens and cannot "
                                       f"take {n_new} more; make the caches with a larger max_len")
        starts.add(check_cache_step(c, n_new, None, backend))
    if len(starts) != 1:
        raise SwarefError("cache", f"{name} continue at different positions {sorted(starts)}; "
                                   f"every layer of a sequence must have seen the same tokens")
    return starts.pop()


def check_step(model, chunks, caches, backend, num_threads):
    """Everything a step of B sequences checks, before any cache is written.

    chunks: B token-id sequences; caches: B per-layer cache lists
    -> (token arrays, segments [(offset, length, start)]).  No cache object may
    appear twice (two layers or two sequences sharing one would see it advance
    halfway through the step).
    """
    cfg = model.config
    check_backend_available(backend)
    V.check_num_threads(num_threads)
    if not isinstance(chunks, (list, tuple)) or not isinstance(caches, (list, tuple)):
        raise SwarefTypeError("argument", f"chunks and caches must be lists (one entry per sequence), got "
                                          f"{type(chunks).__name__} and {type(caches).__name__}")
    if len(chunks) != len(caches) or not chunks:
        raise SwarefError("argument", f"need one cache list per chunk, got {len(chunks)} chunks "
                                      f"and {len(caches)} cache lists")
    toks, segments, owner, off = [], [], {}, 0
    for b, (chunk, seq_caches) in enumerate(zip(chunks, caches)):
        t = check_tokens(chunk, cfg.vocab_size, f"chunks[{b}]")
        start = check_sequence_caches(seq_caches, cfg, len(t), backend, f"caches[{b}]")
        for li, c in enumerate(seq_caches):
            if id(c) in owner:
                raise SwarefError("cache", f"caches[{b}][{li}] is the same cache object as {owner[id(c)]}; "
                                           f"every layer of every sequence needs its own cache")
            owner[id(c)] = f"caches[{b}][{li}]"
        toks.append(t)
        segments.append((off, len(t), start))
        off += len(t)
    return toks, segments


# --------------------------------------------------------------- forward pass

def forward_packed(model, chunks, caches, *, backend="reference", num_threads=None, logits="last"):
    """Run B sequences' next chunks through the model, each on its own caches.

    chunks: list of B token-id arrays [T_b]; caches: list of B per-layer cache
    lists; each chunk continues where its caches stop.
    -> list of B logits arrays: [T_b, V] (logits="all") or [1, V] (logits="last").

    The caches are advanced by the chunk.  Everything is validated first
    (``check_step``), so a rejected call leaves every cache untouched.
    """
    if logits not in ("all", "last"):
        raise SwarefError("argument", f"logits must be 'all' or 'last', got {logits!r}")
    with holding(caches):
        toks, segments = check_step(model, chunks, caches, backend, num_threads)
        return _forward_checked(model, toks, segments, caches, backend, num_threads, logits)


@contextlib.contextmanager
def holding(caches):
    """Hold every cache of a B x L cache structure for a whole step or prompt, before its
    checks: another thread must not move a cache between its check and layer 0's write.
    The cache lock is re-entrant, so prefill/decode_step take it again inside; objects
    that are not caches are left for check_step to reject."""
    seqs = caches if isinstance(caches, (list, tuple)) else []
    # The locks themselves, not an ExitStack of `exclusive` contexts (with the eager messages of
    # check_int, those cost a step's checks 84 -> 63 us warm, 193 -> 126 us after a weight
    # stream): taken in order, released in reverse, on any exit.
    held = []
    try:
        for seq in seqs:
            for c in (seq if isinstance(seq, (list, tuple)) else []):
                if isinstance(c, RollingBufferCache):
                    held.append(acquire(c))
        yield
    finally:
        for lock in reversed(held):
            lock.release()


def _forward_checked(model, toks, segments, caches, backend, num_threads, logits):
    """forward_packed after its checks, with every cache held."""
    cfg = model.config
    h = as_float32(model.embed[np.concatenate(toks)])    # a bfloat16 table: only the gathered rows widened
    if cfg.embed_scale is not None:
        h = h * np.float32(cfg.embed_scale)
    rotations = StepRotations(cfg, segments)             # RoPE's cos/sin once per step, not per layer
    for li, lw in enumerate(model.layers):
        h = decoder_layer(h, lw, cfg, li, segments, [seq_caches[li] for seq_caches in caches], backend, num_threads,
                          rotations)
    out = []
    for off, n, _ in segments:
        rows = h[off: off + n] if logits == "all" else h[off + n - 1: off + n]
        y = linear(norm(rows, model.final_norm, model.final_norm_b, cfg, backend), model.lm_head, None, backend,
                   num_threads)
        if cfg.logit_scale is not None:
            y = y * np.float32(cfg.logit_scale)
        if cfg.final_softcap is not None:  # Gemma 2: c * tanh(logits / c), in float64 like the norms' statistics
            y = (cfg.final_softcap * np.tanh(y.astype(np.float64) / cfg.final_softcap)).astype(np.float32)
        out.append(y)
    return out


def forward(model, tokens, caches, *, backend="reference", num_threads=None, logits="all"):
    """One sequence's chunk: tokens [T] -> logits [T, V] (or [1, V] with logits="last")."""
    return forward_packed(model, [tokens], [caches], backend=backend, num_threads=num_threads,
                          logits=logits)[0]


def prefill_prompt(model, tokens, caches, *, chunk_size=None, backend="reference", num_threads=None,
                   logits="last", progress=None):
    """Push a prompt through the model in chunks.

    tokens: [T]  ->  logits [T, V] (logits="all") or [1, V] of the last token.
    chunk_size: None (the smallest window, or the whole prompt), an int >= 1 or a
    list of chunk lengths summing to T.  ``progress(done, total)`` is called after
    each chunk.  The whole prompt is checked against every cache first.
    """
    cfg = model.config
    tokens = check_tokens(tokens, cfg.vocab_size)
    T = len(tokens)
    sched = chunk_schedule(T, chunk_size if chunk_size is not None else default_chunk_size(cfg), None)
    if logits not in ("all", "last"):
        raise SwarefError("argument", f"logits must be 'all' or 'last', got {logits!r}")
    with holding([caches]):
        check_step(model, [tokens], [caches], backend, num_threads)
        outs, a = [], 0
        for s in sched:
            outs.append(forward(model, tokens[a:a + s], caches, backend=backend, num_threads=num_threads,
                                logits=logits))
            a += s
            if progress is not None:
                progress(a, T)
    return np.concatenate(outs) if logits == "all" else outs[-1]


# ----------------------------------------------------------------- generation

def _check_callable(f, name):
    if f is not None and not callable(f):
        raise SwarefTypeError("argument", f"{name} must be a callable or None, got {type(f).__name__}")


def generate(model, prompts, *, max_new_tokens, sample=None, chunk_size=None, backend="reference",
             num_threads=None, stop_on_eos=True, on_token=None, progress=None):
    """Generate up to ``max_new_tokens`` for each of B prompts, each with its own caches.

    prompts: list of B token-id sequences (different lengths allowed).
    sample: None (greedy) or a callable (logits [V], b) -> token id (see sampling.make_sampler).
    on_token(b, token_id) is called as each token is produced; if it returns True, sequence b
    ends after that token (how ``text`` implements stop strings).
    -> GenerationResult with ``tokens`` a list of B lists of new ids.

    Every argument is checked before the first prompt runs.  Prompts are
    prefilled one after another (each chunked on its own schedule); then every
    unfinished sequence advances by one token per step, their projections and
    MLPs packed into one matrix product.
    """
    cfg = model.config
    max_new_tokens = V.check_int(max_new_tokens, "max_new_tokens", minimum=0)
    if isinstance(prompts, np.ndarray) and prompts.ndim == 1 or not isinstance(prompts, (list, tuple)):
        raise SwarefTypeError("argument", "prompts must be a list of token-id sequences (one per sequence)")
    if not prompts:
        raise SwarefError("argument", "prompts must hold at least one prompt")
    prompts = [check_tokens(p, cfg.vocab_size, f"prompts[{b}]") for b, p in enumerate(prompts)]
    for p in prompts:
        chunk_schedule(len(p), chunk_size if chunk_size is not None else default_chunk_size(cfg), None)
    check_backend_available(backend)
    V.check_num_threads(num_threads)
    for f, name in ((sample, "sample"), (on_token, "on_token"), (progress, "progress")):
        _check_callable(f, name)
    pick = sample if sample is not None else (lambda logits, b: greedy(logits))
    eos = set(cfg.eos_token_ids) if stop_on_eos else set()
    B = len(prompts)
    caches = [new_caches(model, len(p) + max(max_new_tokens, 1)) for p in prompts]
    new = [[] for _ in range(B)]
    done_eos = [False] * B
    t0 = time.perf_counter()
    last = []
    for b, p in enumerate(prompts):
        last.append(prefill_prompt(model, p, caches[b], chunk_size=chunk_size, backend=backend,
                                   num_threads=num_threads, progress=progress)[-1])
    t_prefill = time.perf_counter() - t0
    active = list(range(B)) if max_new_tokens > 0 else []
    n_decoded = 0
    t1 = time.perf_counter()
    while active:
        still = []
        feed = []
        for i, b in enumerate(active):
            tok = int(pick(last[i], b))
            new[b].append(tok)
            # on_token returning True ends sequence b after this token (a caller's stop string).
            stop = on_token is not None and on_token(b, tok) is True
            if tok in eos:
                done_eos[b] = True
            elif not stop and len(new[b]) < max_new_tokens:
                still.append(b)
                feed.append(tok)
        active = still
        if not active:
            break
        last = [lg[-1] for lg in forward_packed(model, [np.array([t]) for t in feed],
                                                [caches[b] for b in active], backend=backend,
                                                num_threads=num_threads, logits="last")]
        n_decoded += len(active)
    t_decode = time.perf_counter() - t1
    return GenerationResult(new, done_eos, sum(len(p) for p in prompts), t_prefill, n_decoded, t_decode,
                            cache_nbytes(caches))
