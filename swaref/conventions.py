"""Translate other engines' window parameters to swaref's W and back (docs/spec.md, rule 2).

swaref's W: a query at position p sees keys p - W < j <= p (W keys, itself included).
Each ``from_*`` function returns swaref's W for a *causal* sliding window
expressed in that engine's convention; each ``to_*`` function is its inverse.
"""
from . import _validate as V
from .errors import SwarefError


def _int(x, name, minimum):
    return V.check_int(x, name, kind="window", minimum=minimum)


def from_flash_attention(window_size):
    """FlashAttention ``window_size=(left, right)`` with right == 0 (causal): W = left + 1.

    ``left == -1`` means unbounded: returns None (plain causal attention).
    """
    try:
        left, right = window_size
    except (TypeError, ValueError):
        raise V.SwarefTypeError("window", f"window_size must be a (left, right) pair, got {window_size!r}") from None
    right = _int(right, "window_size[1]", -1)
    if right != 0:
        raise SwarefError("window", f"only causal windows (right == 0) map to swaref's W, got right={right}")
    left = _int(left, "window_size[0]", -1)
    return None if left == -1 else left + 1


def to_flash_attention(window):
    """swaref W -> FlashAttention ``window_size=(W - 1, 0)``; None -> (-1, 0)."""
    window = V.check_window(window)
    return (-1, 0) if window is None else (window - 1, 0)


def from_hf_transformers(sliding_window, legacy=False):
    """Hugging Face ``config.sliding_window`` = S.

    Current transformers (``masking_utils.sliding_window_overlay``: kv_idx > q_idx - S): W = S.
    ``legacy=True``: the eager mask before PR #26792 and the FlashAttention path
    before PR #40163 (window_size=(S, S)) let S + 1 keys through: W = S + 1.
    """
    if sliding_window is None:
        return None
    s = _int(sliding_window, "sliding_window", 1 if not legacy else 0)
    return s + 1 if legacy else s


def to_hf_transformers(window, legacy=False):
    window = V.check_window(window)
    if window is None:
        return None
    if legacy:
        return window - 1
    return window


def from_llama_cpp(n_swa):
    """llama.cpp ``n_swa`` with LLAMA_SWA_TYPE_STANDARD (masked iff p - j >= n_swa): W = n_swa."""
    return _int(n_swa, "n_swa", 1)


def to_llama_cpp(window):
    return V.check_window(window)


def from_xformers_local(window_size):
    """xformers ``make_local_attention(S)`` (what Mistral's production code used): W = S."""
    return _int(window_size, "window_size", 1)


def to_xformers_local(window):
    return V.check_window(window)


def from_xformers_bottom_right(window_left, window_right=0):
    """xformers ``LocalAttentionFromBottomRightMask(window_left=l, window_right=0)``: keys [p-l, p], W = l + 1."""
    r = _int(window_right, "window_right", 0)
    if r != 0:
        raise SwarefError("window", f"only causal windows (window_right == 0) map to swaref's W, got {r}")
    return _int(window_left, "window_left", 0) + 1


def to_xformers_bottom_right(window):
    window = V.check_window(window)
    return (window - 1, 0)


def from_vllm(sliding_window):
    """vLLM decoder takes HF's ``sliding_window`` S and passes FlashAttention (S - 1, 0): W = S."""
    return _int(sliding_window, "sliding_window", 1)


def to_vllm(window):
    return V.check_window(window)


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
    window = V.check_window(window)
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
    window = V.check_window(window)
    return window - 1


def from_mistral_paper(w):
    """The Mistral 7B paper's "positions between i - W and i", read inclusively: W + 1 keys.

    Its Figure 1 caption ("at most W tokens") and figures show W per row; swaref follows
    the figures and Mistral's tested code (W = w).  This function gives the inclusive
    reading's W for comparison.
    """
    return _int(w, "W", 1) + 1


def to_mistral_paper(window):
    """Inverse of from_mistral_paper: the paper's W whose inclusive reading gives ``window`` keys."""
    window = V.check_window(window)
    if window < 2:
        raise SwarefError("window", f"the paper's inclusive reading cannot express W = {window} (it always shows >= 2 keys)")
    return window - 1


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


#: name -> (from_fn, to_fn) for the command line and the docs table.
CONVENTIONS = {
    "swaref": (V.check_window, V.check_window),
    "flash_attention_left": (lambda left: from_flash_attention((left, 0)), lambda w: to_flash_attention(w)[0]),
    "hf_transformers": (from_hf_transformers, to_hf_transformers),
    "hf_transformers_legacy": (lambda s: from_hf_transformers(s, legacy=True),
                               lambda w: to_hf_transformers(w, legacy=True)),
    "llama_cpp": (from_llama_cpp, to_llama_cpp),
    "xformers_local": (from_xformers_local, to_xformers_local),
    "vllm": (from_vllm, to_vllm),
    "mistral_one_file_ref_prefill": (from_mistral_one_file_ref, to_mistral_one_file_ref),
    "mistral_one_file_ref_decode": (lambda s: from_mistral_one_file_ref(s, "decode"),
                                    lambda w: to_mistral_one_file_ref(w, "decode")),
    "attention_gym": (from_attention_gym, to_attention_gym),
    "xformers_bottom_right_left": (from_xformers_bottom_right, lambda w: to_xformers_bottom_right(w)[0]),
    "mistral_paper_inclusive": (from_mistral_paper, to_mistral_paper),
}


def to_swaref(convention, value):
    """swaref's W for ``value`` expressed in ``convention`` (a key of CONVENTIONS)."""
    if convention not in CONVENTIONS:
        raise SwarefError("argument", f"unknown convention {convention!r}; known: {sorted(CONVENTIONS)}")
    return CONVENTIONS[convention][0](value)


def from_swaref(convention, window):
    """``window`` (swaref's W) expressed in ``convention``."""
    if convention not in CONVENTIONS:
        raise SwarefError("argument", f"unknown convention {convention!r}; known: {sorted(CONVENTIONS)}")
    return CONVENTIONS[convention][1](window)
