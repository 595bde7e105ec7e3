"""Translate other engines' window parameters to swaref's windows and back (docs/spec.md, rule 2).

swaref's windows (swaref.windows, rule 1), for a query at position p and a key at j:

* ``None``: causal, ``j <= p``;
* ``W`` (an int >= 1): ``p - W < j <= p``, W keys, itself included;
* ``Sliding(W, sink_tokens=n)``: ``j <= p and (j < n or p - W < j)``;
* ``TwoSided(left, right)``: ``p - left <= j <= p + right`` (None = unbounded on that side);
* ``Chunked(C)``: ``j <= p and j // C == p // C``.

Each ``from_*`` function takes a parameter as that engine spells it and returns the swaref
window with the same visible keys (normalized: ``TwoSided(W - 1, 0)`` is ``W``); each ``to_*``
function is its inverse and raises ``SwarefError`` (kind "window") for a window the engine
cannot express.  ``to_swaref(name, value)`` / ``from_swaref(name, window)`` do the same by name;
the names they accept are listed below and in docs/spec.md, rule 2.
"""
from dataclasses import dataclass
from typing import Any, Callable

from . import _validate as V
from .errors import SwarefError, SwarefTypeError
from .windows import Chunked, Sliding, TwoSided, normalize


def _int(x, name, minimum):
    return V.check_int(x, name, kind="window", minimum=minimum)


def _side(x, name):
    """An engine's window side: -1 = unbounded (None), else an int >= 0."""
    x = _int(x, name, -1)
    return None if x == -1 else x


def _minus1(side):
    return -1 if side is None else side


def _window(window):
    return normalize(window, "window")


def _cannot(engine, window, can):
    return SwarefError("window", f"{engine} expresses {can}; it cannot express {window!r}")


def _causal_window(window, engine):
    """``window`` as None or an int W, for engines that only have the causal sliding window."""
    w = _window(window)
    if w is not None and not V.is_int(w):
        raise _cannot(engine, w, "only a causal sliding window (an int W) or None")
    return w


def _sliding_W(window, engine):
    """``window`` as an int W, for engines whose parameter has no value for "no window"."""
    w = _causal_window(window, engine)
    if w is None:
        raise _cannot(engine, w, "only a causal sliding window (an int W)")
    return w


def _pair(window_size, name="window_size"):
    try:
        left, right = window_size
    except (TypeError, ValueError):
        raise SwarefTypeError("window", f"{name} must be a (left, right) pair, got {window_size!r}") from None
    return _side(left, f"{name}[0]"), _side(right, f"{name}[1]")


def _flag(x, name):
    if isinstance(x, bool) or (V.is_int(x) and int(x) in (0, 1)):
        return bool(x)
    raise SwarefTypeError("argument", f"{name} must be a bool or 0/1, got {V._describe(x)}")


# --------------------------------------------------------------------------
# FlashAttention 2/3
# --------------------------------------------------------------------------

def from_flash_attention(window_size=(-1, -1), causal=False, attention_chunk=0):
    """FlashAttention ``flash_attn_func(..., window_size=(left, right), causal=..., attention_chunk=...)``.

    A query at p (bottom-right aligned) sees keys ``[p - left, p + right]``; -1 is unbounded.
    ``causal=True`` clips ``right`` to 0 whatever it was (``csrc/flash_attn/flash_api.cpp``:
    ``if (is_causal) { window_size_right = 0; }``), which is why transformers' FlashAttention
    path can pass ``(S - 1, S - 1)`` with ``causal=True`` for a decoder's ``sliding_window = S``
    (``modeling_flash_attention_utils._process_flash_attention_kwargs``): it means ``(S - 1, 0)``,
    W = S.  Without ``causal`` the same pair is the two-sided window ``TwoSided(S - 1, S - 1)``.
    FA3's ``attention_chunk=C`` (``hopper/mask.h``: keys from ``(p // C) * C``) with causal and
    no narrower left window is ``Chunked(C)``.
    """
    left, right = _pair(window_size)
    causal = _flag(causal, "causal")
    chunk = _int(attention_chunk, "attention_chunk", 0)
    if causal:
        right = 0
    if chunk:
        if right != 0:
            raise SwarefError("window", "attention_chunk without causal (keys after p within the chunk) "
                                        "is not a swaref window")
        if left is not None and left < chunk - 1:
            raise SwarefError("window", f"window_size left={left} inside attention_chunk={chunk} (a sliding "
                                        f"window within each chunk) is not a swaref window")
        return Chunked(chunk)
    return _window(TwoSided(left, right))


def to_flash_attention(window):
    """swaref window -> ``window_size=(left, right)`` for FlashAttention *without* ``causal``
    (W -> ``(W - 1, 0)``, None -> ``(-1, 0)``, ``TwoSided(l, r)`` -> ``(l, r)``).  For chunked
    attention use ``flash_attention_kwargs``."""
    w = _window(window)
    if w is None:
        return (-1, 0)
    if V.is_int(w):
        return (w - 1, 0)
    if isinstance(w, TwoSided):
        return (_minus1(w.left), _minus1(w.right))
    raise _cannot("FlashAttention window_size", w, "None, an int W or TwoSided (chunked: attention_chunk)")


def flash_attention_kwargs(window):
    """swaref window -> the keyword arguments of ``flash_attn_func`` that give the same keys:
    ``{"window_size": (l, r), "causal": bool}``, plus ``"attention_chunk": C`` (FA3) for
    ``Chunked(C)``.  Causal windows use ``causal=True`` and ``right = 0``."""
    w = _window(window)
    if isinstance(w, Chunked):
        return {"window_size": (-1, -1), "causal": True, "attention_chunk": w.size}
    left, right = to_flash_attention(w)
    return {"window_size": (left, right), "causal": not isinstance(w, TwoSided)}


# --------------------------------------------------------------------------
# ONNX Attention (opset 23+: softcap; opset 25: left_window_size / right_window_size)
# --------------------------------------------------------------------------

def from_onnx(left_window_size=-1, right_window_size=-1, is_causal=0):
    """ONNX ``Attention`` opset 25 attributes -> swaref window.

    A query at ``p = offset + i`` (bottom-right aligned on past keys) sees ``j`` iff
    ``p - left_window_size <= j <= p + right_window_size``; -1 (the default) leaves a side
    unbounded, values below -1 are invalid; ``is_causal=1`` keeps excluding later keys, so
    the right side is then 0 (onnx/onnx#8108).  Defaults: full bidirectional attention.
    """
    left = _side(left_window_size, "left_window_size")
    right = _side(right_window_size, "right_window_size")
    if _flag(is_causal, "is_causal"):
        right = 0
    return _window(TwoSided(left, right))


def to_onnx(window):
    """swaref window -> ``{"left_window_size", "right_window_size", "is_causal"}`` (ints, as
    node attributes).  Causal windows use ``is_causal=1`` with right 0; chunked attention and
    kept sink tokens have no attribute (they need an ``attn_mask``)."""
    w = _window(window)
    if w is None or V.is_int(w):
        left = -1 if w is None else w - 1
        return {"left_window_size": left, "right_window_size": 0, "is_causal": 1}
    if isinstance(w, TwoSided):
        return {"left_window_size": _minus1(w.left), "right_window_size": _minus1(w.right), "is_causal": 0}
    raise _cannot("ONNX Attention", w, "None, an int W or TwoSided (others need an attn_mask)")


def from_onnx_softcap(softcap):
    """ONNX ``Attention``'s ``softcap`` attribute (opset 23+): 0 means no soft-capping.

    -> swaref's ``softcap`` (None, or the cap as a float > 0).  transformers' Gemma 2
    ``attn_logit_softcapping`` uses None for "off" and needs no conversion.
    """
    if V.is_real(softcap) and softcap == 0:
        return None
    return V.check_softcap(softcap)


def to_onnx_softcap(softcap):
    """Inverse of from_onnx_softcap: swaref's None -> 0.0."""
    c = V.check_softcap(softcap)
    return 0.0 if c is None else c


# --------------------------------------------------------------------------
# Hugging Face transformers
# --------------------------------------------------------------------------

def from_hf_transformers(sliding_window, legacy=False):
    """Hugging Face ``config.sliding_window`` = S of a decoder (Mistral, Gemma 2/3, gpt-oss, ...).

    Current transformers (``masking_utils.sliding_window_overlay``: kv_idx > q_idx - S): W = S.
    ``legacy=True``: the eager mask before PR #26792 and the FlashAttention path
    before PR #40163 (window_size=(S, S)) let S + 1 keys through: W = S + 1.
    """
    if sliding_window is None:
        return None
    s = _int(sliding_window, "sliding_window", 1 if not legacy else 0)
    return s + 1 if legacy else s


def to_hf_transformers(window, legacy=False):
    w = _causal_window(window, "transformers' sliding_window")
    if w is None:
        return None
    return w - 1 if legacy else w


def from_hf_attention_chunk_size(attention_chunk_size):
    """Llama 4 ``config.attention_chunk_size`` = C (``masking_utils.chunked_overlay``:
    ``(kv_idx - pad) // C == (q_idx - pad) // C`` plus causal, positions counted from the
    first unpadded token): ``Chunked(C)``; None -> None."""
    if attention_chunk_size is None:
        return None
    return Chunked(_int(attention_chunk_size, "attention_chunk_size", 1))


def to_hf_attention_chunk_size(window):
    return _chunk_size(window, "attention_chunk_size", none_ok=True)


def _chunk_size(window, engine, none_ok):
    w = _window(window)
    if w is None and none_ok:
        return None
    if not isinstance(w, Chunked):
        raise _cannot(engine, w, "only Chunked(C)" + (" or None" if none_ok else ""))
    return w.size


def from_hf_bidirectional_sliding_window(sliding_window):
    """transformers' bidirectional sliding window S (``masking_utils.sliding_window_bidirectional_overlay``:
    ``abs(q_idx - kv_idx) <= S``, used by ``create_bidirectional_sliding_window_mask``):
    ``TwoSided(S, S)``, 2S + 1 keys.  Note the asymmetry with the causal ``sliding_window``,
    where S counts the query itself."""
    s = _int(sliding_window, "sliding_window", 0)
    return _window(TwoSided(s, s))


def to_hf_bidirectional_sliding_window(window):
    return _symmetric_half(window, "transformers' bidirectional sliding_window")


def _symmetric_half(window, engine):
    """h of a symmetric two-sided window TwoSided(h, h) (h = 0 is the window 1: itself only)."""
    w = _window(window)
    if w == 1:
        return 0
    if not (isinstance(w, TwoSided) and w.left is not None and w.left == w.right):
        raise _cannot(engine, w, "only a symmetric TwoSided(h, h)")
    return w.left


def from_hf_layer_type(layer_type, config):
    """The window of a decoder layer whose ``config.layer_types[i]`` is ``layer_type``:
    "full_attention" -> None, "sliding_attention" -> ``from_hf_transformers(config.sliding_window)``,
    "chunked_attention" -> ``Chunked(config.attention_chunk_size)``.  ``config`` is a
    transformers config or a dict (config.json)."""
    def get(key):
        return config.get(key) if isinstance(config, dict) else getattr(config, key, None)
    if layer_type == "full_attention":
        return None
    if layer_type == "sliding_attention":
        return from_hf_transformers(get("sliding_window"))
    if layer_type == "chunked_attention":
        return from_hf_attention_chunk_size(get("attention_chunk_size"))
    raise SwarefError("argument", f"layer_type must be 'full_attention', 'sliding_attention' or "
                                  f"'chunked_attention', got {layer_type!r}")


def from_modernbert(local_attention):
    """ModernBERT ``config.local_attention`` = L (an encoder): transformers passes
    ``sliding_window = L // 2`` to ``create_bidirectional_sliding_window_mask`` and
    ``window_size = (L // 2, L // 2)`` to FlashAttention without causal: ``TwoSided(L // 2, L // 2)``
    (L + 1 keys for even L; an odd L acts as L - 1)."""
    h = _int(local_attention, "local_attention", 0) // 2
    return _window(TwoSided(h, h))


def to_modernbert(window):
    return 2 * _symmetric_half(window, "ModernBERT local_attention")


def from_longformer(attention_window):
    """Longformer ``config.attention_window`` = w (even, > 0; ``LongformerSelfAttention``
    asserts both): w / 2 keys on each side, ``TwoSided(w // 2, w // 2)``."""
    w = _int(attention_window, "attention_window", 2)
    if w % 2:
        raise SwarefError("window", f"attention_window must be even (Longformer asserts it), got {w}")
    return _window(TwoSided(w // 2, w // 2))


def to_longformer(window):
    h = _symmetric_half(window, "Longformer attention_window")
    if h < 1:
        raise _cannot("Longformer attention_window", _window(window), "TwoSided(h, h) with h >= 1")
    return 2 * h


# --------------------------------------------------------------------------
# llama.cpp, vLLM, xformers, PyTorch flex_attention / attention-gym, Mistral
# --------------------------------------------------------------------------

LLAMA_CPP_SWA_TYPES = ("standard", "chunked", "symmetric")


def _swa_type(swa_type):
    if swa_type not in LLAMA_CPP_SWA_TYPES:
        raise SwarefError("argument", f"swa_type must be one of {LLAMA_CPP_SWA_TYPES}, got {swa_type!r}")
    return swa_type


def from_llama_cpp(n_swa, swa_type="standard", causal=None):
    """llama.cpp ``n_swa`` with ``LLAMA_SWA_TYPE_<swa_type>`` (``llama_hparams::is_masked_swa``
    in ``src/llama-hparams.cpp``; the graph also masks ``p0 > p1`` when ``causal_attn``):

    * STANDARD, masked iff ``p - j >= n_swa``: W = n_swa (causal);
    * CHUNKED, masked iff ``j < (p / n_swa) * n_swa``: ``Chunked(n_swa)`` (causal);
    * SYMMETRIC, masked iff ``|p - j| > n_swa / 2`` (integer division): ``TwoSided(n_swa // 2,
      n_swa // 2)`` for the non-causal encoders that use it.

    ``causal`` defaults to how models use each type (True, True, False).
    """
    t = _swa_type(swa_type)
    n = _int(n_swa, "n_swa", 1)
    causal = (t != "symmetric") if causal is None else _flag(causal, "causal")
    if t == "standard":
        return n if causal else _window(TwoSided(n - 1, None))
    if t == "chunked":
        if not causal:
            raise SwarefError("window", "llama.cpp CHUNKED without causal_attn (later keys in the chunk "
                                        "visible) is not a swaref window")
        return Chunked(n)
    return _window(TwoSided(n // 2, 0 if causal else n // 2))


def to_llama_cpp(window, swa_type="standard"):
    """swaref window -> ``n_swa`` for ``swa_type`` (symmetric: the even ``n_swa = 2h``)."""
    t = _swa_type(swa_type)
    if t == "standard":
        return _sliding_W(window, "llama.cpp STANDARD n_swa")
    w = _window(window)
    if t == "chunked":
        return _chunk_size(w, "llama.cpp CHUNKED n_swa", none_ok=False)
    h = _symmetric_half(w, "llama.cpp SYMMETRIC n_swa")
    if h < 1:
        raise _cannot("llama.cpp SYMMETRIC n_swa", w, "TwoSided(h, h) with h >= 1 (n_swa = 0 turns SWA off)")
    return 2 * h


VLLM_ATTN_TYPES = ("decoder", "encoder_only")


def from_vllm(sliding_window, attn_type="decoder"):
    """vLLM's ``sliding_window`` = S as its FlashAttention backend passes it
    (``vllm/v1/attention/backends/flash_attn.py``): a decoder gets ``(S - 1, 0)``, W = S;
    ``AttentionType.ENCODER_ONLY`` gets ``(S - 1, S - 1)`` without causal, ``TwoSided(S - 1, S - 1)``
    (so vLLM's ModernBERT passes ``local_attention // 2 + 1``, vllm-project/vllm#44040)."""
    if attn_type not in VLLM_ATTN_TYPES:
        raise SwarefError("argument", f"attn_type must be one of {VLLM_ATTN_TYPES}, got {attn_type!r}")
    if sliding_window is None:
        return None if attn_type == "decoder" else TwoSided(None, None)
    s = _int(sliding_window, "sliding_window", 1)
    return s if attn_type == "decoder" else _window(TwoSided(s - 1, s - 1))


def to_vllm(window, attn_type="decoder"):
    if attn_type not in VLLM_ATTN_TYPES:
        raise SwarefError("argument", f"attn_type must be one of {VLLM_ATTN_TYPES}, got {attn_type!r}")
    if attn_type == "decoder":
        return _causal_window(window, "vLLM sliding_window")
    if _window(window) == TwoSided(None, None):
        return None
    return _symmetric_half(window, "vLLM encoder-only sliding_window") + 1


def from_xformers_local(window_size):
    """xformers ``make_local_attention(S)`` (what Mistral's production code used): W = S."""
    return _int(window_size, "window_size", 1)


def to_xformers_local(window):
    return _sliding_W(window, "xformers make_local_attention")


def from_xformers_bottom_right(window_left, window_right=0):
    """xformers ``LocalAttentionFromBottomRightMask(window_left=l, window_right=r)``: keys [p-l, p+r]."""
    left = _int(window_left, "window_left", 0)
    right = _int(window_right, "window_right", 0)
    return _window(TwoSided(left, right))


def to_xformers_bottom_right(window):
    w = _window(window)
    if V.is_int(w):
        return (w - 1, 0)
    if isinstance(w, TwoSided) and w.left is not None and w.right is not None:
        return (w.left, w.right)
    raise _cannot("xformers LocalAttentionFromBottomRightMask", w, "an int W or a bounded TwoSided")


def from_mistral_one_file_ref(sliding_window, phase="prefill"):
    """Mistral's ``one_file_ref.py`` (2023): prefill mask ``triu(tril(ones), diagonal=-S)``
    lets S + 1 keys through (W = S + 1); its decode reads an S-slot ring (W = S)."""
    s = _int(sliding_window, "sliding_window", 1)
    if phase == "prefill":
        return s + 1
    if phase == "decode":
        return s
    raise SwarefError("argument", f"phase must be 'prefill' or 'decode', got {phase!r}")


def to_mistral_one_file_ref(window, phase="prefill"):
    window = _sliding_W(window, "one_file_ref's sliding_window")
    if phase == "prefill":
        if window < 2:
            raise SwarefError("window", f"one_file_ref's prefill cannot express W = {window} (it always shows >= 2 keys)")
        return window - 1
    if phase == "decode":
        return window
    raise SwarefError("argument", f"phase must be 'prefill' or 'decode', got {phase!r}")


def from_attention_gym(lookback):
    """attention-gym ``generate_sliding_window(L)``: q_idx - kv_idx <= L plus causal, W = L + 1."""
    return _int(lookback, "window_size", 0) + 1


def to_attention_gym(window):
    window = _sliding_W(window, "attention-gym generate_sliding_window")
    return window - 1


def flex_attention_mask_mod(window):
    """A PyTorch ``flex_attention`` ``mask_mod(b, h, q_idx, kv_idx)`` for any swaref window, for
    ``create_block_mask`` (q_idx / kv_idx are absolute positions: 0.. for one sequence).  It uses
    only tensor operators, so it also runs on plain ints; swaref does not import torch."""
    w = _window(window)
    if w is None:
        return lambda b, h, q, kv: kv <= q
    if V.is_int(w):
        return lambda b, h, q, kv: (kv <= q) & (q - kv < w)
    if isinstance(w, Sliding):
        n, size = w.sink_tokens, w.size
        return lambda b, h, q, kv: (kv <= q) & ((kv < n) | (q - kv < size))
    if isinstance(w, Chunked):
        c = w.size
        return lambda b, h, q, kv: (kv <= q) & (kv // c == q // c)
    left, right = w.left, w.right
    if left is None and right is None:
        return lambda b, h, q, kv: (kv >= 0) | (q >= 0)          # every key (a tensor, not True)
    if left is None:
        return lambda b, h, q, kv: kv - q <= right
    if right is None:
        return lambda b, h, q, kv: q - kv <= left
    return lambda b, h, q, kv: (q - kv <= left) & (kv - q <= right)


def from_mistral_paper(w):
    """The Mistral 7B paper's "positions between i - W and i", read inclusively: W + 1 keys.

    Its Figure 1 caption ("at most W tokens") and figures show W per row; swaref follows
    the figures and Mistral's tested code (W = w).  This function gives the inclusive
    reading's W for comparison.
    """
    return _int(w, "W", 1) + 1


def to_mistral_paper(window):
    """Inverse of from_mistral_paper: the paper's W whose inclusive reading gives ``window`` keys."""
    window = _sliding_W(window, "the Mistral paper's W")
    if window < 2:
        raise SwarefError("window", f"the paper's inclusive reading cannot express W = {window} (it always shows >= 2 keys)")
    return window - 1


# --------------------------------------------------------------------------
# By name
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Convention:
    """One engine parameter: ``value`` says what ``to_swaref(name, value)`` takes."""
    name: str
    value: str
    to_swaref: Callable[[Any], Any]
    from_swaref: Callable[[Any], Any]


def _onnx_from_attrs(attrs):
    if not isinstance(attrs, dict):
        raise SwarefTypeError("window", f"ONNX attributes must be a dict, got {V._describe(attrs)}")
    unknown = set(attrs) - {"left_window_size", "right_window_size", "is_causal"}
    if unknown:
        raise SwarefError("argument", f"unknown ONNX Attention attributes {sorted(unknown)}")
    return from_onnx(**attrs)


_TABLE = [
    ("swaref", "a swaref window (None, int W, Sliding, TwoSided, Chunked)", _window, _window),
    ("flash_attention", "window_size=(left, right) without causal; -1 unbounded",
     from_flash_attention, to_flash_attention),
    ("flash_attention_causal", "window_size=(left, right) with causal=True (right clipped to 0)",
     lambda ws: from_flash_attention(ws, causal=True), lambda w: flash_attention_kwargs(_causal_window(
         w, "FlashAttention with causal"))["window_size"]),
    ("flash_attention_left", "left of window_size=(left, 0); -1 unbounded",
     lambda left: from_flash_attention((left, 0)), lambda w: to_flash_attention(_causal_window(w, "(left, 0)"))[0]),
    ("flash_attention_chunk", "FA3 attention_chunk=C with causal=True",
     lambda c: from_flash_attention(causal=True, attention_chunk=_int(c, "attention_chunk", 1)),
     lambda w: _chunk_size(w, "FA3 attention_chunk", none_ok=False)),
    ("onnx", "dict of ONNX Attention (opset 25) attributes left_window_size, right_window_size, is_causal",
     _onnx_from_attrs, to_onnx),
    ("hf_transformers", "decoder config.sliding_window = S (Mistral, Gemma 2/3, gpt-oss, ...)",
     from_hf_transformers, to_hf_transformers),
    ("hf_transformers_legacy", "sliding_window = S, transformers before PR #26792 / #40163",
     lambda s: from_hf_transformers(s, legacy=True), lambda w: to_hf_transformers(w, legacy=True)),
    ("hf_attention_chunk_size", "Llama 4 config.attention_chunk_size = C",
     from_hf_attention_chunk_size, to_hf_attention_chunk_size),
    ("hf_bidirectional_sliding_window", "S of masking_utils' bidirectional sliding window (|d| <= S)",
     from_hf_bidirectional_sliding_window, to_hf_bidirectional_sliding_window),
    ("modernbert", "ModernBERT config.local_attention = L", from_modernbert, to_modernbert),
    ("longformer", "Longformer config.attention_window = w (even)", from_longformer, to_longformer),
    ("llama_cpp", "n_swa, LLAMA_SWA_TYPE_STANDARD", from_llama_cpp, to_llama_cpp),
    ("llama_cpp_chunked", "n_swa, LLAMA_SWA_TYPE_CHUNKED",
     lambda n: from_llama_cpp(n, "chunked"), lambda w: to_llama_cpp(w, "chunked")),
    ("llama_cpp_symmetric", "n_swa, LLAMA_SWA_TYPE_SYMMETRIC (non-causal)",
     lambda n: from_llama_cpp(n, "symmetric"), lambda w: to_llama_cpp(w, "symmetric")),
    ("vllm", "sliding_window = S of a decoder", from_vllm, to_vllm),
    ("vllm_encoder_only", "sliding_window = S of an ENCODER_ONLY attention",
     lambda s: from_vllm(s, "encoder_only"), lambda w: to_vllm(w, "encoder_only")),
    ("xformers_local", "make_local_attention(S)", from_xformers_local, to_xformers_local),
    ("xformers_bottom_right_left", "window_left of LocalAttentionFromBottomRightMask(window_right=0)",
     from_xformers_bottom_right, lambda w: to_xformers_bottom_right(_sliding_W(w, "window_left"))[0]),
    ("attention_gym", "lookback L of generate_sliding_window(L)", from_attention_gym, to_attention_gym),
    ("mistral_one_file_ref_prefill", "sliding_window = S, one_file_ref.py prefill",
     from_mistral_one_file_ref, to_mistral_one_file_ref),
    ("mistral_one_file_ref_decode", "sliding_window = S, one_file_ref.py decode",
     lambda s: from_mistral_one_file_ref(s, "decode"), lambda w: to_mistral_one_file_ref(w, "decode")),
    ("mistral_paper_inclusive", "the Mistral 7B paper's W read inclusively", from_mistral_paper, to_mistral_paper),
]

#: name -> Convention, for to_swaref / from_swaref, the command line and the docs table.
CONVENTIONS = {name: Convention(name, value, to, frm) for name, value, to, frm in _TABLE}


def _lookup(convention):
    if convention not in CONVENTIONS:
        raise SwarefError("argument", f"unknown convention {convention!r}; known: {sorted(CONVENTIONS)}")
    return CONVENTIONS[convention]


def to_swaref(convention, value):
    """swaref's window for ``value`` expressed in ``convention`` (a name in CONVENTIONS)."""
    return _lookup(convention).to_swaref(value)


def from_swaref(convention, window):
    """``window`` (a swaref window) expressed in ``convention``."""
    return _lookup(convention).from_swaref(window)


if __doc__ is not None:          # python -OO strips docstrings
    __doc__ += "\nNames (``to_swaref(name, value)``: what value is):\n\n" + "\n".join(
        f"* ``{c.name}``: {c.value}" for c in CONVENTIONS.values()) + "\n"
