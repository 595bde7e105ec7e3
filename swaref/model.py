"""A Mistral-architecture decoder that runs on swaref's attention (NumPy, float32).

token embedding -> L x [RMSNorm -> GQA attention (RoPE at absolute positions,
rolling buffer cache per layer) -> residual -> RMSNorm -> SwiGLU MLP ->
residual] -> RMSNorm -> LM head.  No biases.  docs/model.md explains every
choice and how this matches Hugging Face transformers.

Classes hold state only (``ModelConfig``, ``LayerWeights``, ``Model``,
``GenerationResult``); the math lives in module-level functions.

Order that matters:

* keys are rotated by RoPE at their *absolute* positions before they enter the
  cache, so a cached key never needs re-rotating when the ring wraps;
* a prompt goes through the whole model chunk by chunk (default chunk W): each
  layer's attention for a chunk uses ``swaref.prefill`` (attend to cache +
  chunk, then write), and generated tokens use ``swaref.decode_step`` (write,
  then attend), so every layer shares the one schedule;
* a full-attention layer (window None) needs every key: its cache is a plain
  buffer of capacity ``max_len`` (prompt + new tokens).

Dimension names: T tokens in a chunk, d hidden size, I intermediate size,
V vocabulary, Hq / Hkv heads, D head_dim, W window, L layers, B sequences.
"""
import math
import numbers
import time

import numpy as np

from . import _validate as V
from .cache import RollingBufferCache
from .errors import SwarefError, SwarefTypeError
from .prefill import chunk_schedule, decode_step, prefill

#: RoPE layouts.  "half" (Hugging Face's rotate_half): element i pairs with
#: i + D/2.  "interleaved" (Mistral's original view_as_complex): 2i pairs with 2i+1.
ROPE_LAYOUTS = ("half", "interleaved")


# --------------------------------------------------------------------------- state

class ModelConfig:
    """Hyper-parameters of a Mistral-architecture model (validated by ``check_config``)."""

    FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "n_layers", "n_heads",
              "n_kv_heads", "head_dim", "windows", "rope_theta", "rms_norm_eps",
              "tie_word_embeddings", "rope_layout", "bos_token_id", "eos_token_ids")

    def __init__(self, *, vocab_size, hidden_size, intermediate_size, n_layers, n_heads,
                 n_kv_heads, head_dim=None, window=None, rope_theta=10000.0, rms_norm_eps=1e-6,
                 tie_word_embeddings=False, rope_layout="half", bos_token_id=None, eos_token_ids=()):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.head_dim = head_dim if head_dim is not None else (
            hidden_size // n_heads if isinstance(hidden_size, int) and isinstance(n_heads, int) and n_heads > 0
            else None)
        self.windows = window_list(window, n_layers)
        self.rope_theta = rope_theta
        self.rms_norm_eps = rms_norm_eps
        self.tie_word_embeddings = tie_word_embeddings
        self.rope_layout = rope_layout
        self.bos_token_id = bos_token_id
        self.eos_token_ids = tuple(eos_token_ids) if eos_token_ids is not None else ()
        check_config(self)

    def __repr__(self):
        body = ", ".join(f"{f}={getattr(self, f)!r}" for f in self.FIELDS)
        return f"ModelConfig({body})"


class LayerWeights:
    """One decoder layer's float32 weights, in Hugging Face's [out, in] orientation.

    attn_norm [d], wq [Hq*D, d], wk [Hkv*D, d], wv [Hkv*D, d], wo [d, Hq*D],
    mlp_norm [d], w_gate [I, d], w_up [I, d], w_down [d, I].
    """

    NAMES = ("attn_norm", "wq", "wk", "wv", "wo", "mlp_norm", "w_gate", "w_up", "w_down")

    def __init__(self, **arrays):
        for name in self.NAMES:
            setattr(self, name, arrays[name])


class Model:
    """A config plus float32 weights: embed [V, d], layers [L], final_norm [d], lm_head [V, d]."""

    def __init__(self, config, embed, layers, final_norm, lm_head):
        self.config = config
        self.embed = embed
        self.layers = list(layers)
        self.final_norm = final_norm
        self.lm_head = lm_head
        check_weights(self)

    @property
    def n_params(self):
        n = self.embed.size + self.final_norm.size
        n += sum(getattr(lw, name).size for lw in self.layers for name in LayerWeights.NAMES)
        if self.lm_head is not self.embed:
            n += self.lm_head.size
        return n


class GenerationResult:
    """What ``generate`` returns: per-sequence new token ids and timings."""

    def __init__(self, tokens, finished_by_eos, prefill_tokens, prefill_seconds, decode_tokens,
                 decode_seconds, cache_bytes):
        self.tokens = tokens
        self.finished_by_eos = finished_by_eos
        self.prefill_tokens = prefill_tokens
        self.prefill_seconds = prefill_seconds
        self.decode_tokens = decode_tokens
        self.decode_seconds = decode_seconds
        self.cache_bytes = cache_bytes


# --------------------------------------------------------------------- validation

def _is_int(x):
    return isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))


def window_list(window, n_layers):
    """Per-layer windows: an int or None (every layer alike) or a list of L ints / Nones."""
    if not _is_int(n_layers) or n_layers < 1:
        raise SwarefError("argument", f"n_layers must be an int >= 1, got {n_layers!r}")
    if window is None or _is_int(window):
        return (V.check_window(window),) * int(n_layers)
    if isinstance(window, (list, tuple)):
        if len(window) != n_layers:
            raise SwarefError("window", f"a per-layer window list needs {n_layers} entries (one per layer), "
                                        f"got {len(window)}")
        return tuple(V.check_window(w, f"window[{i}]") for i, w in enumerate(window))
    raise SwarefTypeError("window", f"window must be an int >= 1, None or a list of them per layer, "
                                    f"got {type(window).__name__}")


def check_config(cfg):
    """Reject a config whose fields are out of range, naming the field."""
    for name in ("vocab_size", "hidden_size", "intermediate_size", "n_layers", "n_heads", "n_kv_heads",
                 "head_dim"):
        val = getattr(cfg, name)
        if not _is_int(val) or val < 1:
            raise SwarefError("argument", f"config field {name} must be an int >= 1, got {val!r}")
    if cfg.n_heads % cfg.n_kv_heads:
        raise SwarefError("heads", f"config n_heads ({cfg.n_heads}) must be a multiple of n_kv_heads "
                                   f"({cfg.n_kv_heads})")
    if cfg.head_dim % 2:
        raise SwarefError("argument", f"config head_dim must be even for RoPE, got {cfg.head_dim}")
    for name in ("rope_theta", "rms_norm_eps"):
        val = getattr(cfg, name)
        if isinstance(val, bool) or not isinstance(val, numbers.Real) or not math.isfinite(val) or val <= 0:
            raise SwarefError("argument", f"config field {name} must be a finite number > 0, got {val!r}")
    if cfg.rope_layout not in ROPE_LAYOUTS:
        raise SwarefError("argument", f"config rope_layout must be one of {ROPE_LAYOUTS}, got {cfg.rope_layout!r}")
    if not isinstance(cfg.tie_word_embeddings, bool):
        raise SwarefTypeError("argument", f"config tie_word_embeddings must be a bool, "
                                          f"got {cfg.tie_word_embeddings!r}")
    for name, ids in (("bos_token_id", () if cfg.bos_token_id is None else (cfg.bos_token_id,)),
                      ("eos_token_ids", cfg.eos_token_ids)):
        for t in ids:
            if not _is_int(t) or not 0 <= t < cfg.vocab_size:
                raise SwarefError("argument", f"config {name} must be token ids in [0, {cfg.vocab_size}), got {t!r}")
    if len(cfg.windows) != cfg.n_layers:
        raise SwarefError("window", f"config windows needs {cfg.n_layers} entries, got {len(cfg.windows)}")


def expected_shapes(cfg):
    """name -> shape of every weight: 'embed', 'final_norm', 'lm_head', and ('layer', name) tuples."""
    d, i, D = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    layer = {"attn_norm": (d,), "wq": (cfg.n_heads * D, d), "wk": (cfg.n_kv_heads * D, d),
             "wv": (cfg.n_kv_heads * D, d), "wo": (d, cfg.n_heads * D), "mlp_norm": (d,),
             "w_gate": (i, d), "w_up": (i, d), "w_down": (d, i)}
    return {"embed": (cfg.vocab_size, d), "final_norm": (d,), "lm_head": (cfg.vocab_size, d)}, layer


def check_weights(model):
    """Every weight a C-contiguous float32 array of the shape the config implies."""
    cfg = model.config
    top, layer = expected_shapes(cfg)

    def one(arr, name, shape):
        if not isinstance(arr, np.ndarray) or arr.dtype != np.float32:
            got = f"{arr.dtype} array" if isinstance(arr, np.ndarray) else type(arr).__name__
            raise SwarefTypeError("dtype", f"weight {name} must be a float32 numpy array, got {got}")
        if arr.shape != shape:
            raise SwarefError("shape", f"weight {name} must have shape {shape}, got {arr.shape}")

    one(model.embed, "embed", top["embed"])
    one(model.final_norm, "final_norm", top["final_norm"])
    one(model.lm_head, "lm_head", top["lm_head"])
    if len(model.layers) != cfg.n_layers:
        raise SwarefError("argument", f"model needs {cfg.n_layers} layers, got {len(model.layers)}")
    for li, lw in enumerate(model.layers):
        for name, shape in layer.items():
            one(getattr(lw, name), f"layers[{li}].{name}", shape)


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


# ------------------------------------------------------------------------ the math

def rms_norm(x, weight, eps):
    """x: [T, d], weight: [d]  ->  [T, d] float32.

    weight * x / sqrt(mean(x^2) + eps); the mean is accumulated in float64
    (transformers does it in float32; the difference is far below 1e-6).
    """
    ms = np.mean(np.square(x, dtype=np.float64), axis=-1, keepdims=True)
    return (x * (1.0 / np.sqrt(ms + eps)).astype(np.float32)) * weight


def rope_inv_freq(head_dim, theta):
    """[D/2] float64: theta ** (-2i / D), the frequency of rotation pair i (both layouts)."""
    return 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))


def rope_cos_sin(positions, head_dim, theta):
    """positions: [T] int  ->  cos, sin: [T, D/2] float32 of angle p * theta^(-2i/D).

    Angles are computed in float64 so that a key at position 100,000 is
    rotated as accurately as one at position 3 (a float32 product p * f loses
    about p * 6e-8 radians).
    """
    ang = np.asarray(positions, dtype=np.float64)[:, None] * rope_inv_freq(head_dim, theta)[None, :]
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def apply_rope(x, positions, theta, layout="half"):
    """Rotate each head vector by its absolute position.

    x: [T, H, D], positions: [T]  ->  [T, H, D] float32

    "half": pair (x[i], x[i + D/2]) rotated by angle_i (transformers' rotate_half).
    "interleaved": pair (x[2i], x[2i+1]) rotated by angle_i (Mistral's reference code).
    """
    T, H, D = x.shape
    cos, sin = rope_cos_sin(positions, D, theta)
    cos, sin = cos[:, None, :], sin[:, None, :]
    if layout == "half":
        a, b = x[..., : D // 2], x[..., D // 2:]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)
    if layout == "interleaved":
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = b * cos + a * sin
        return out
    raise SwarefError("argument", f"RoPE layout must be one of {ROPE_LAYOUTS}, got {layout!r}")


def interleaved_to_half(w, n_heads, head_dim):
    """Permute a Q or K projection's rows from the interleaved RoPE layout to rotate-half.

    w: [H*D, d]  ->  [H*D, d].  Row 2i of a head moves to i, row 2i+1 to i + D/2
    (what transformers' convert_mistral_weights_to_hf.py does), so a model with
    these weights and layout "half" computes exactly the same as the original
    with layout "interleaved".
    """
    d = w.shape[1]
    return w.reshape(n_heads, head_dim // 2, 2, d).transpose(0, 2, 1, 3).reshape(n_heads * head_dim, d)


def half_to_interleaved(w, n_heads, head_dim):
    """Inverse of ``interleaved_to_half``: w [H*D, d] -> [H*D, d]."""
    d = w.shape[1]
    return w.reshape(n_heads, 2, head_dim // 2, d).transpose(0, 2, 1, 3).reshape(n_heads * head_dim, d)


def silu(x):
    """x: any shape -> x * sigmoid(x), computed stably for large |x| (float32)."""
    return x * (0.5 * (1.0 + np.tanh(0.5 * x)))


def swiglu_mlp(x, lw):
    """x: [T, d]  ->  [T, d]:  w_down (silu(w_gate x) * (w_up x))."""
    return (silu(x @ lw.w_gate.T) * (x @ lw.w_up.T)) @ lw.w_down.T


def qkv_projection(x, lw, cfg, positions):
    """x: [T, d], positions: [T]  ->  q [T, Hq, D], k [T, Hkv, D] (both rotated), v [T, Hkv, D]."""
    T = x.shape[0]
    D = cfg.head_dim
    q = (x @ lw.wq.T).reshape(T, cfg.n_heads, D)
    k = (x @ lw.wk.T).reshape(T, cfg.n_kv_heads, D)
    v = np.ascontiguousarray((x @ lw.wv.T).reshape(T, cfg.n_kv_heads, D))
    q = np.ascontiguousarray(apply_rope(q, positions, cfg.rope_theta, cfg.rope_layout))
    k = np.ascontiguousarray(apply_rope(k, positions, cfg.rope_theta, cfg.rope_layout))
    return q, k, v


def attention_block(x, lw, cfg, segments, caches, backend="reference", num_threads=None):
    """The attention half of a layer for B sequences packed along the token axis.

    x: [N, d] (normalised input), segments: list of (offset, length, start position)
    per sequence, caches: that layer's cache per sequence  ->  [N, d]

    Projections run once on the packed tokens; attention runs per sequence on
    its own cache: ``decode_step`` (write, then attend) for a single generated
    token, ``prefill`` (attend, then write) for a chunk of prompt tokens.
    """
    positions = np.concatenate([np.arange(p, p + n, dtype=np.int64) for _, n, p in segments])
    q, k, v = qkv_projection(x, lw, cfg, positions)
    out = np.empty_like(q)
    for (off, n, start), cache in zip(segments, caches):
        sl = slice(off, off + n)
        if n == 1 and cache.next_position is not None:
            out[sl] = decode_step(q[sl], k[sl], v[sl], cache, start=start,
                                  backend=backend, num_threads=num_threads)
        else:
            # One model chunk is one attention chunk: the chunking is decided once, for every layer.
            out[sl] = prefill(q[sl], k[sl], v[sl], cache, chunk_size=n, start=start,
                              backend=backend, num_threads=num_threads)
    return out.reshape(x.shape[0], -1) @ lw.wo.T


def forward_packed(model, chunks, caches, *, backend="reference", num_threads=None, logits="last"):
    """Run B sequences' next chunks through the model, each on its own caches.

    chunks: list of B token-id arrays [T_b]; caches: list of B per-layer cache
    lists; each chunk continues where its caches stop.
    -> list of B logits arrays: [T_b, V] (logits="all") or [1, V] (logits="last").

    The caches are advanced by the chunk.  Inputs are validated first, so a
    rejected call leaves every cache untouched.
    """
    cfg = model.config
    if logits not in ("all", "last"):
        raise SwarefError("argument", f"logits must be 'all' or 'last', got {logits!r}")
    check_backend_available(backend)
    if len(chunks) != len(caches) or not chunks:
        raise SwarefError("argument", f"need one cache list per chunk, got {len(chunks)} chunks "
                                      f"and {len(caches)} cache lists")
    toks, segments, off = [], [], 0
    for b, (chunk, seq_caches) in enumerate(zip(chunks, caches)):
        t = check_tokens(chunk, cfg.vocab_size, f"chunks[{b}]")
        start = check_sequence_caches(seq_caches, cfg, len(t), f"caches[{b}]")
        toks.append(t)
        segments.append((off, len(t), start))
        off += len(t)
    h = model.embed[np.concatenate(toks)]
    for li, lw in enumerate(model.layers):
        layer_caches = [seq_caches[li] for seq_caches in caches]
        h = h + attention_block(rms_norm(h, lw.attn_norm, cfg.rms_norm_eps), lw, cfg, segments,
                                layer_caches, backend, num_threads)
        h = h + swiglu_mlp(rms_norm(h, lw.mlp_norm, cfg.rms_norm_eps), lw)
    out = []
    for off, n, _ in segments:
        rows = h[off: off + n] if logits == "all" else h[off + n - 1: off + n]
        out.append(rms_norm(rows, model.final_norm, cfg.rms_norm_eps) @ model.lm_head.T)
    return out


def check_backend_available(backend):
    """A known backend that can run now (checked before any cache is written)."""
    V.check_backend(backend)
    if backend == "cython":
        # _backend imports the extension lazily: load it now, so that an unbuilt
        # swaref._core fails here (kind "backend") and not halfway through a batch.
        from ._backend import _core
        _core()
    return backend


def forward(model, tokens, caches, *, backend="reference", num_threads=None, logits="all"):
    """One sequence's chunk: tokens [T] -> logits [T, V] (or [1, V] with logits="last")."""
    return forward_packed(model, [tokens], [caches], backend=backend, num_threads=num_threads,
                          logits=logits)[0]


def new_caches(model, max_len):
    """Fresh per-layer caches for one sequence of at most ``max_len`` tokens.

    A sliding layer gets W slots whatever max_len is; a full-attention layer
    (window None) gets max_len slots.
    """
    if not _is_int(max_len) or max_len < 1:
        raise SwarefError("argument", f"max_len must be an int >= 1, got {max_len!r}")
    cfg = model.config
    return [RollingBufferCache(w, cfg.n_kv_heads, cfg.head_dim, np.float32,
                               capacity=None if w is not None else int(max_len))
            for w in cfg.windows]


def check_sequence_caches(seq_caches, cfg, n_new, name="caches"):
    """One sequence's L caches must match the model and continue at one shared position; return it."""
    if not isinstance(seq_caches, (list, tuple)) or len(seq_caches) != cfg.n_layers:
        raise SwarefError("cache", f"{name} must be a list of {cfg.n_layers} caches (one per layer), "
                                   f"got {type(seq_caches).__name__} of length "
                                   f"{len(seq_caches) if hasattr(seq_caches, '__len__') else '?'}")
    nexts = set()
    for li, (c, w) in enumerate(zip(seq_caches, cfg.windows)):
        if not isinstance(c, RollingBufferCache):
            raise SwarefTypeError("cache", f"{name}[{li}] must be a RollingBufferCache, got {type(c).__name__}")
        if c.window != w or c.n_kv_heads != cfg.n_kv_heads or c.head_dim != cfg.head_dim \
                or c.dtype != np.float32:
            raise SwarefError("cache", f"{name}[{li}] is {c!r}; layer {li} needs window={w}, "
                                       f"n_kv_heads={cfg.n_kv_heads}, head_dim={cfg.head_dim}, float32")
        if w is None and c.n_seen + n_new > c.capacity:
            raise SwarefError("cache", f"{name}[{li}] (full attention) holds {c.n_seen} of {c.capacity} "
                                       f"tokens and cannot take {n_new} more; make the caches with a larger "
                                       f"max_len")
        nexts.add(0 if c.next_position is None else c.next_position)
    if len(nexts) != 1:
        raise SwarefError("cache", f"{name} continue at different positions {sorted(nexts)}; "
                                   f"every layer of a sequence must have seen the same tokens")
    return nexts.pop()


def cache_nbytes(caches):
    """Bytes held by a (nested) list of caches."""
    if isinstance(caches, RollingBufferCache):
        return caches.nbytes
    return sum(cache_nbytes(c) for c in caches)


def default_chunk_size(cfg):
    """The smallest sliding window (Mistral's suggestion: chunks of W), or None (whole prompt)."""
    ws = [w for w in cfg.windows if w is not None]
    return min(ws) if ws else None


def prefill_prompt(model, tokens, caches, *, chunk_size=None, backend="reference", num_threads=None,
                   logits="last", progress=None):
    """Push a prompt through the model in chunks.

    tokens: [T]  ->  logits [T, V] (logits="all") or [1, V] of the last token.
    chunk_size: None (the smallest window, or the whole prompt), an int >= 1 or a
    list of chunk lengths summing to T.  ``progress(done, total)`` is called after
    each chunk.
    """
    cfg = model.config
    tokens = check_tokens(tokens, cfg.vocab_size)
    T = len(tokens)
    cs = chunk_size if chunk_size is not None else default_chunk_size(cfg)
    sched = chunk_schedule(T, cs, None)
    check_sequence_caches(caches, cfg, T)
    outs, a = [], 0
    for s in sched:
        out = forward(model, tokens[a:a + s], caches, backend=backend, num_threads=num_threads,
                      logits=logits)
        outs.append(out)
        a += s
        if progress is not None:
            progress(a, T)
    return np.concatenate(outs) if logits == "all" else outs[-1]


def generate(model, prompts, *, max_new_tokens, sample=None, chunk_size=None, backend="reference",
             num_threads=None, stop_on_eos=True, on_token=None, progress=None):
    """Generate up to ``max_new_tokens`` for each of B prompts, each with its own caches.

    prompts: list of B token-id sequences (different lengths allowed).
    sample: None (greedy) or a callable (logits [V], b) -> token id (see swaref.sampling).
    on_token(b, token_id) is called as each token is produced.
    -> GenerationResult with ``tokens`` a list of B lists of new ids.

    Prompts are prefilled one after another (each chunked on its own
    schedule); then every unfinished sequence advances by one token per step,
    their projections and MLPs packed into one matrix product.
    """
    from .sampling import greedy
    cfg = model.config
    if not _is_int(max_new_tokens) or max_new_tokens < 0:
        raise SwarefError("argument", f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if isinstance(prompts, np.ndarray) and prompts.ndim == 1 or not isinstance(prompts, (list, tuple)):
        raise SwarefTypeError("argument", "prompts must be a list of token-id sequences (one per sequence)")
    if not prompts:
        raise SwarefError("argument", "prompts must hold at least one prompt")
    prompts = [check_tokens(p, cfg.vocab_size, f"prompts[{b}]") for b, p in enumerate(prompts)]
    for p in prompts:
        chunk_schedule(len(p), chunk_size if chunk_size is not None else default_chunk_size(cfg), None)
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
            if on_token is not None:
                on_token(b, tok)
            if tok in eos:
                done_eos[b] = True
            elif len(new[b]) < max_new_tokens:
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


def random_model(cfg, seed=0, scale=0.5):
    """A model with random float32 weights (normal, std scale/sqrt(fan_in)); norms near 1.

    For tests and ``swaref generate --tiny``: its output is noise.
    """
    rng = np.random.default_rng(seed)
    top, layer = expected_shapes(cfg)

    def w(shape):
        if len(shape) == 1:
            return (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        return (scale / math.sqrt(shape[1]) * rng.standard_normal(shape)).astype(np.float32)

    embed = rng.standard_normal(top["embed"]).astype(np.float32)
    layers = [LayerWeights(**{name: w(shape) for name, shape in layer.items()}) for _ in range(cfg.n_layers)]
    lm_head = embed if cfg.tie_word_embeddings else w(top["lm_head"])
    return Model(cfg, embed, layers, w(top["final_norm"]), lm_head)
