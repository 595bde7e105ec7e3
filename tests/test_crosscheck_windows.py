"""Spec 1.1's window family against the engines' own code (the `crosscheck` extra).

* Masks: transformers' ``masking_utils`` (``sliding_window_causal_mask_function``,
  ``chunked_causal_mask_function``, ``sliding_window_bidirectional_mask_function``, the
  per-layer-type masks ``create_masks_for_generate`` builds from GptOss / Gemma 2 / Gemma 3 /
  Llama 4 configs, ModernBERT's ``create_bidirectional_sliding_window_mask``), transformers'
  FlashAttention kwargs (``_process_flash_attention_kwargs``: the ``(S - 1, S - 1)`` pair with
  ``causal=True``), and PyTorch ``create_mask`` on ``conventions.flex_attention_mask_mod``;
  each must equal ``swaref.window_mask`` of the converted window.
* Attention outputs (two-sided, chunked, kept sink tokens; plain, softcap, learned sinks):
  PyTorch ``flex_attention`` with a ``mask_mod`` written here (sinks through its log-sum-exp),
  transformers' Gemma 2 and gpt-oss eager attention with transformers-built masks, and
  Longformer's own self-attention module.

Controls: each comparison has a wrong neighbour (a window one key wider or narrower, chunked
read as sliding, the FlashAttention pair read without ``causal``) that must miss, so each
comparison can fail.  float64 inputs; Gemma 2's eager softmax and Longformer's run in float32
(1e-6), the rest agrees to 1e-12.
"""
import collections

import numpy as np
import pytest

from crosscheck_helpers import attention_inputs, eager_module, heads_first, require_extra

require_extra()

import torch  # noqa: E402
from torch.nn.attention.flex_attention import create_block_mask, create_mask, flex_attention  # noqa: E402
from transformers import (Gemma2Config, Gemma3TextConfig, GptOssConfig, Llama4TextConfig,  # noqa: E402
                          LongformerConfig, ModernBertConfig)
from transformers import masking_utils as M  # noqa: E402
from transformers.modeling_flash_attention_utils import _process_flash_attention_kwargs  # noqa: E402
from transformers.models.gemma2 import modeling_gemma2  # noqa: E402
from transformers.models.gpt_oss import modeling_gpt_oss  # noqa: E402
from transformers.models.longformer import modeling_longformer  # noqa: E402
from transformers.models.modernbert import modeling_modernbert  # noqa: E402

import swaref  # noqa: E402
from swaref import conventions as C  # noqa: E402
from swaref.windows import Chunked, Sliding, TwoSided  # noqa: E402
from oracle import assert_close  # noqa: E402

pytestmark = pytest.mark.crosscheck

T, HQ, HKV, D = 24, 4, 2, 16
SCALE = D ** -0.5
POS = np.arange(T)
GEMMA2_TOL = 1e-6          # its softmax runs in float32


def mask_of(window, n=T):
    pos = np.arange(n)
    return swaref.window_mask(pos, pos, window)


def hf_mask(mask_function, n=T):
    """transformers' eager (additive) mask for one sequence -> bool [n, n], True = visible."""
    m = M.eager_mask(1, n, n, mask_function=mask_function, dtype=torch.float64)
    return (m[0, 0] == 0).numpy()


def _eager(config):
    config._attn_implementation = "eager"
    return config


def _differs(window, other):
    return not np.array_equal(mask_of(window), mask_of(other))


# --------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------

@pytest.mark.parametrize("S", [1, 2, 5, 9])
def test_transformers_causal_sliding_window_mask(S):
    got = hf_mask(M.sliding_window_causal_mask_function(S))
    np.testing.assert_array_equal(mask_of(C.from_hf_transformers(S)), got)
    assert _differs(C.from_hf_transformers(S, legacy=True), C.from_hf_transformers(S))     # control


@pytest.mark.parametrize("chunk", [1, 3, 4, 7])
def test_transformers_chunked_mask(chunk):
    got = hf_mask(M.chunked_causal_mask_function(chunk, torch.zeros(1, dtype=torch.long)))
    np.testing.assert_array_equal(mask_of(C.from_hf_attention_chunk_size(chunk)), got)
    np.testing.assert_array_equal(mask_of(C.from_llama_cpp(chunk, "chunked")), got)
    if chunk > 1:     # control: chunked attention read as a sliding window of C
        assert not np.array_equal(mask_of(chunk), got)


@pytest.mark.parametrize("S", [0, 1, 3, 6])
def test_transformers_bidirectional_sliding_window_mask(S):
    got = hf_mask(M.sliding_window_bidirectional_mask_function(S))
    np.testing.assert_array_equal(mask_of(C.from_hf_bidirectional_sliding_window(S)), got)
    assert not np.array_equal(mask_of(TwoSided(S + 1, S + 1)), got)                     # control


@pytest.mark.parametrize("config", [
    GptOssConfig(sliding_window=5, num_hidden_layers=4),
    Gemma2Config(sliding_window=6, num_hidden_layers=4),
    Gemma3TextConfig(sliding_window=3, num_hidden_layers=6),
    Llama4TextConfig(attention_chunk_size=4, num_hidden_layers=4),
], ids=lambda c: type(c).__name__)
def test_transformers_configs_layer_by_layer(config):
    config = _eager(config)
    masks = M.create_masks_for_generate(config, torch.zeros(1, T, 8), None, None, position_ids=torch.arange(T)[None])
    assert set(masks) == set(config.layer_types)
    for layer_type, m in masks.items():
        window = C.from_hf_layer_type(layer_type, config)
        np.testing.assert_array_equal(mask_of(window), (m[0, 0] == 0).numpy(), err_msg=f"{layer_type} -> {window}")
        if window is not None:    # control: the window one key wider must miss
            wider = Chunked(window.size + 1) if isinstance(window, Chunked) else window + 1
            assert not np.array_equal(mask_of(wider), (m[0, 0] == 0).numpy())


def _fa_kwargs(is_causal, sliding_window):
    """transformers' own FlashAttention kwargs for a layer (window_size supported)."""
    kw = _process_flash_attention_kwargs(query_length=T, key_length=T, is_causal=is_causal,
                                         sliding_window=sliding_window,
                                         supports_mapping=collections.defaultdict(bool, window_size=True))
    return {"window_size": kw["window_size"], "causal": kw["causal"]}


@pytest.mark.parametrize("S", [2, 5, 9])
def test_transformers_flash_attention_path_passes_s_minus_1_twice_with_causal(S):
    kw = _fa_kwargs(True, S)
    assert kw == {"window_size": (S - 1, S - 1), "causal": True}
    assert C.from_flash_attention(**kw) == C.from_hf_transformers(S) == S
    # control: the same pair without causal is a two-sided window of 2S - 1 keys
    assert C.from_flash_attention(kw["window_size"]) == TwoSided(S - 1, S - 1)
    assert _differs(C.from_flash_attention(kw["window_size"]), S)


@pytest.mark.parametrize("L", [2, 4, 8, 12])
def test_modernbert_window_built_by_transformers(L):
    config = _eager(ModernBertConfig(local_attention=L, num_hidden_layers=3, hidden_size=16,
                                     num_attention_heads=2, intermediate_size=16))
    m = M.create_bidirectional_sliding_window_mask(config=config, inputs_embeds=torch.zeros(1, T, 16),
                                                   attention_mask=None)
    np.testing.assert_array_equal(mask_of(C.from_modernbert(L)), (m[0, 0] == 0).numpy())
    # Its FlashAttention path: ModernBertAttention.sliding_window through transformers' kwargs.
    layer = config.layer_types.index("sliding_attention")
    attn = modeling_modernbert.ModernBertAttention(config, layer_idx=layer)
    kw = _fa_kwargs(attn.is_causal, attn.sliding_window)
    assert kw == {"window_size": (L // 2, L // 2), "causal": False}
    assert C.from_flash_attention(**kw) == C.from_modernbert(L)
    assert C.from_vllm(L // 2 + 1, "encoder_only") == C.from_modernbert(L)      # vLLM after #44040
    assert _differs(C.from_vllm(L // 2, "encoder_only"), C.from_modernbert(L))   # control: before it


WINDOWS = [None, 1, 5, Sliding(5, 2), Sliding(3, 7), TwoSided(2, 3), TwoSided(0, 4), TwoSided(None, 1),
           TwoSided(4, None), TwoSided(None, None), Chunked(4), Chunked(1), Chunked(T + 3)]


@pytest.mark.parametrize("window", WINDOWS, ids=repr)
def test_flex_attention_mask_mod_through_pytorch(window):
    got = create_mask(C.flex_attention_mask_mod(window), 1, 1, T, T, device="cpu")[0, 0].numpy()
    np.testing.assert_array_equal(got, mask_of(window))


# --------------------------------------------------------------------------
# Attention outputs
# --------------------------------------------------------------------------

def _inputs(seed, mag=1.0):
    return attention_inputs(seed, T, HQ, HKV, D, mag)


def rule_mask_mod(window):
    """Rule 1 written as a mask_mod here, independently of conventions.flex_attention_mask_mod."""
    def mod(b, h, q, kv):
        if isinstance(window, int):
            return (kv <= q) & (kv > q - window)
        if isinstance(window, Sliding):
            return (kv <= q) & ((kv < window.sink_tokens) | (kv > q - window.size))
        if isinstance(window, Chunked):
            return (kv <= q) & (torch.div(kv, window.size, rounding_mode="floor")
                                == torch.div(q, window.size, rounding_mode="floor"))
        lo = (kv >= q - window.left) if window.left is not None else (kv >= 0)
        hi = (kv <= q + window.right) if window.right is not None else (kv >= 0)
        return lo & hi
    return mod


def flex(q, k, v, window, softcap=None, sinks=None):
    """flex_attention with the rule's mask_mod; softcap as a score_mod; sinks through the
    log-sum-exp: out * e^lse / (e^lse + e^sink) = out * sigmoid(lse - sink)."""
    block = create_block_mask(rule_mask_mod(window), 1, 1, T, T, device="cpu")
    score_mod = None if softcap is None else (lambda s, b, h, qi, ki: softcap * torch.tanh(s / softcap))
    out, lse = flex_attention(heads_first(q), heads_first(k), heads_first(v), score_mod=score_mod, block_mask=block, scale=SCALE,
                              enable_gqa=True, return_lse=True)
    if sinks is not None:
        out = out * torch.sigmoid(lse - torch.from_numpy(np.asarray(sinks))[None, :, None])[..., None]
    return out[0].transpose(0, 1).numpy()


def _backends(window, **variant):
    """The reference, plus the compiled kernel once it implements this window (the kernel
    helper's work; until then it refuses with kind "backend", never silently)."""
    q, k, v = _inputs(0)
    try:
        swaref.attention(q, k, v, window=window, backend="cython", **variant)
        return ["reference", "cython"]
    except swaref.SwarefError as e:
        if e.kind != "backend":
            raise
        return ["reference"]


OUTPUT_WINDOWS = [TwoSided(2, 3), TwoSided(None, 2), TwoSided(3, None), TwoSided(4, 4), Chunked(5), Chunked(1),
                  Sliding(4, 2), Sliding(6, 1)]
#: A wrong neighbour per window: one key more on one side, chunk boundary moved, sink count off.
WRONG_NEIGHBOUR = {
    TwoSided(2, 3): TwoSided(2, 4), TwoSided(None, 2): TwoSided(None, 1), TwoSided(3, None): TwoSided(4, None),
    TwoSided(4, 4): TwoSided(3, 4), Chunked(5): Chunked(6), Chunked(1): 2, Sliding(4, 2): Sliding(4, 3),
    Sliding(6, 1): 6,
}


@pytest.mark.parametrize("variant", ["plain", "softcap", "sinks"])
@pytest.mark.parametrize("window", OUTPUT_WINDOWS, ids=repr)
def test_attention_equals_flex_attention(window, variant):
    q, k, v = _inputs(1, mag=3.0)
    kw = {"plain": {}, "softcap": {"softcap": 2.0},
          "sinks": {"sinks": np.random.default_rng(2).standard_normal(HQ) * 2}}[variant]
    want = flex(q, k, v, window, **kw)
    for backend in _backends(window, **kw):
        assert_close(swaref.attention(q, k, v, window=window, backend=backend, **kw), want, 1e-12,
                     name=f"{window!r} {variant} ({backend}) vs flex_attention")
    assert np.abs(flex(q, k, v, WRONG_NEIGHBOUR[window], **kw) - want).max() > 1e-6      # control


def _module(**extra):
    return eager_module(HQ, HKV, D, **extra)


def _additive(mask_function):
    return M.eager_mask(1, T, T, mask_function=mask_function, dtype=torch.float64)


def transformers_mask_function(window):
    """The mask function transformers builds for each window (its own overlays and combinators)."""
    if isinstance(window, TwoSided):
        assert window.left == window.right
        return M.sliding_window_bidirectional_mask_function(window.left)
    if isinstance(window, Chunked):
        return M.chunked_causal_mask_function(window.size, torch.zeros(1, dtype=torch.long))
    sinks = lambda b, h, q, kv: kv < window.sink_tokens                        # noqa: E731
    return M.and_masks(M.or_masks(M.sliding_window_overlay(window.size), sinks), M.causal_mask_function)


HF_WINDOWS = [TwoSided(3, 3), TwoSided(0, 0), Chunked(5), Sliding(4, 2)]


@pytest.mark.parametrize("window", HF_WINDOWS, ids=repr)
def test_attention_equals_transformers_gemma2_softcap(window):
    q, k, v = _inputs(3, mag=3.0)
    cap = 2.0
    out, _ = modeling_gemma2.eager_attention_forward(
        _module(), heads_first(q), heads_first(k), heads_first(v), _additive(transformers_mask_function(window)),
        dropout=0.0, scaling=SCALE, softcap=cap)
    want = out[0].numpy()
    np.testing.assert_array_equal((_additive(transformers_mask_function(window))[0, 0] == 0).numpy(), mask_of(window))
    for backend in _backends(window, softcap=cap):
        assert_close(swaref.attention(q, k, v, window=window, softcap=cap, backend=backend), want, GEMMA2_TOL,
                     name=f"{window!r} softcap ({backend}) vs transformers Gemma 2")


def _gpt_oss(q, k, v, window, sinks):
    """gpt-oss's eager attention over the whole sequence with transformers' mask for ``window`` -> [T, Hq, D]."""
    out, _ = modeling_gpt_oss.eager_attention_forward(
        _module(sinks=torch.from_numpy(sinks)), heads_first(q), heads_first(k), heads_first(v),
        _additive(transformers_mask_function(window)), scaling=SCALE, dropout=0.0)
    return out[0].numpy()


@pytest.mark.parametrize("window", HF_WINDOWS, ids=repr)
def test_attention_equals_transformers_gpt_oss_sinks(window):
    q, k, v = _inputs(4)
    sinks = np.linspace(-2.0, 3.0, HQ)
    want = _gpt_oss(q, k, v, window, sinks)
    for backend in _backends(window, sinks=sinks):
        assert_close(swaref.attention(q, k, v, window=window, sinks=sinks, backend=backend), want, 1e-12,
                     name=f"{window!r} sinks ({backend}) vs transformers gpt-oss")


@pytest.mark.parametrize("attention_window", [4, 6, 8])   # 2 breaks Longformer itself (overlap 1)
def test_attention_equals_longformer_self_attention(attention_window):
    """Longformer's own banded attention (its sliding-chunks matmuls, no global tokens)."""
    hidden, heads = 16, 2
    config = LongformerConfig(hidden_size=hidden, num_attention_heads=heads, attention_window=[attention_window],
                              attention_probs_dropout_prob=0.0, num_hidden_layers=1)
    torch.manual_seed(0)
    layer = modeling_longformer.LongformerSelfAttention(config, layer_id=0).double().eval()
    n = 4 * attention_window                      # a multiple of the window, as Longformer pads to
    x = torch.randn(1, n, hidden, dtype=torch.float64)
    zeros = torch.zeros(1, n, dtype=torch.float64)
    with torch.no_grad():
        out = layer(x, attention_mask=zeros, is_index_masked=zeros.bool(), is_index_global_attn=zeros.bool(),
                    is_global_attn=False)[0][0].numpy()
        q, k, v = (lin(x)[0].numpy().reshape(n, heads, hidden // heads) for lin in (layer.query, layer.key, layer.value))
    window = C.from_longformer(attention_window)
    got = swaref.attention(q, k, v, window=window)
    # Longformer's softmax runs in float32 (softmax(..., dtype=torch.float32)), like Gemma 2's.
    assert_close(got.reshape(n, hidden), out, GEMMA2_TOL, name=f"Longformer attention_window={attention_window}")
    wrong = swaref.attention(q, k, v, window=TwoSided(attention_window, attention_window))    # control: w each side
    assert np.abs(wrong.reshape(n, hidden) - out).max() > 1e-4


@pytest.mark.parametrize("window,capacity", [(Chunked(5), 5), (Chunked(5), 8), (Sliding(4, 2), 4), (Sliding(4, 2), 7)],
                         ids=repr)
def test_cache_prefill_and_decode_equal_transformers_gpt_oss(window, capacity):
    """A kept-sink or chunked cache (rule 4), chunked prefill then token-by-token decode,
    against gpt-oss's eager attention over the whole sequence with transformers' mask."""
    q, k, v = _inputs(6)
    sinks = np.linspace(-1.0, 2.0, HQ)
    want = _gpt_oss(q, k, v, window, sinks)
    for backend in _backends(window, sinks=sinks):
        c = swaref.RollingBufferCache(window, HKV, D, dtype=np.float64, capacity=capacity)
        a = swaref.prefill(q[:15], k[:15], v[:15], c, chunk_size=4, sinks=sinks, backend=backend)
        b = [swaref.decode_step(q[i:i + 1], k[i:i + 1], v[i:i + 1], c, sinks=sinks, backend=backend)
             for i in range(15, T)]
        assert_close(np.concatenate([a, *b]), want, 1e-12, name=f"{window!r} C={capacity} cache ({backend}) vs gpt-oss")
