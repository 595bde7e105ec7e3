"""Other engines' window conventions (spec rule 2).

Each engine's mask is written here the way that engine defines it (from the code
cited in docs/spec.md), and must equal swaref's window_mask at the converted W.
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import swaref
from swaref import conventions as C

N = 40          # positions 0..N-1: long enough to reach p = W + a few for every tested W


def engine_mask(engine, param, n=N):
    """The mask each engine builds for n tokens at positions 0..n-1 (row = query)."""
    i = np.arange(n)[:, None]           # query index (q_idx)
    j = np.arange(n)[None, :]           # key index (kv_idx)
    causal = j <= i
    if engine == "flash_attention":     # window_size=(left, 0): keys [p - left, p + 0]
        left, right = param
        return (j >= i - left) & (j <= i + right) if left >= 0 else causal
    if engine == "hf_transformers":     # sliding_window_overlay: kv_idx > q_idx - S, plus causal
        return causal & (j > i - param)
    if engine == "hf_transformers_legacy":   # eager before #26792: -sliding_window, keys [p - S, p]
        return causal & (j >= i - param)
    if engine == "llama_cpp":           # is_masked_swa STANDARD: masked iff p - j >= n_swa
        return causal & ~(i - j >= param)
    if engine == "xformers_local":      # tril(0) then triu(-S + 1)
        return np.triu(np.tril(np.ones((n, n), dtype=bool), 0), -param + 1)
    if engine == "xformers_bottom_right":    # window_left=l, window_right=0: keys [p - l, p]
        return (j >= i - param) & (j <= i)
    if engine == "vllm":                # passes FlashAttention (S - 1, 0)
        return engine_mask("flash_attention", (param - 1, 0), n)
    if engine == "mistral_one_file_ref_prefill":   # triu(tril(ones), diagonal=-S)
        return np.triu(np.tril(np.ones((n, n), dtype=bool)), -param)
    if engine == "mistral_one_file_ref_decode":    # an S-slot ring written before attending
        return causal & (j >= i - param + 1)
    if engine == "attention_gym":       # q_idx - kv_idx <= L, plus causal
        return causal & (i - j <= param)
    raise AssertionError(engine)


CONVERTERS = {
    "flash_attention": lambda x: C.from_flash_attention(x),
    "hf_transformers": lambda x: C.from_hf_transformers(x),
    "hf_transformers_legacy": lambda x: C.from_hf_transformers(x, legacy=True),
    "llama_cpp": C.from_llama_cpp,
    "xformers_local": C.from_xformers_local,
    "xformers_bottom_right": lambda x: C.from_xformers_bottom_right(x),
    "vllm": C.from_vllm,
    "mistral_one_file_ref_prefill": lambda x: C.from_mistral_one_file_ref(x, "prefill"),
    "mistral_one_file_ref_decode": lambda x: C.from_mistral_one_file_ref(x, "decode"),
    "attention_gym": C.from_attention_gym,
}


def params(engine):
    if engine == "flash_attention":
        return [(left, 0) for left in (-1, 0, 1, 2, 5, 11)]
    if engine in ("xformers_bottom_right", "attention_gym", "hf_transformers_legacy"):
        return [0, 1, 2, 5, 11]
    return [1, 2, 3, 6, 11]


@pytest.mark.parametrize("engine", sorted(CONVERTERS))
def test_converted_window_reproduces_the_engines_mask(engine):
    pos = np.arange(N)
    for param in params(engine):
        W = CONVERTERS[engine](param)
        np.testing.assert_array_equal(
            swaref.window_mask(pos, pos, W), engine_mask(engine, param),
            err_msg=f"{engine}({param!r}) -> W={W}")


def test_the_table_values():
    assert C.from_flash_attention((4095, 0)) == 4096
    assert C.from_flash_attention((-1, 0)) is None
    assert C.to_flash_attention(4096) == (4095, 0) and C.to_flash_attention(None) == (-1, 0)
    assert C.from_hf_transformers(4096) == 4096
    assert C.from_hf_transformers(4096, legacy=True) == 4097
    assert C.from_hf_transformers(None) is None
    assert C.from_llama_cpp(4096) == 4096
    assert C.from_xformers_local(4096) == 4096
    assert C.from_xformers_bottom_right(4095) == 4096
    assert C.from_vllm(4096) == 4096
    assert C.from_mistral_one_file_ref(4096, "prefill") == 4097
    assert C.from_mistral_one_file_ref(4096, "decode") == 4096
    assert C.from_attention_gym(4095) == 4096
    assert C.from_mistral_paper(4096) == 4097


def test_flash_attention_bottom_right_alignment():
    # FlashAttention aligns the window bottom-right: with Sq < Sk, query row i sits at
    # p' = i + Sk - Sq.  swaref's default q_pos (the last T of k_pos) is the same.
    Sq, Sk, left = 4, 10, 2
    W = C.from_flash_attention((left, 0))
    i = np.arange(Sq)[:, None] + Sk - Sq
    j = np.arange(Sk)[None, :]
    fa = (j >= i - left) & (j <= i)
    k_pos = np.arange(Sk)
    np.testing.assert_array_equal(swaref.window_mask(k_pos[Sk - Sq:], k_pos, W), fa)


@pytest.mark.parametrize("name", sorted(C.CONVENTIONS))
@given(x=st.integers(0, 10 ** 6))
def test_every_converter_round_trips(name, x):
    # W -> engine -> W for every W the engine can express, and engine -> W -> engine.
    W = x + 2                                 # one_file_ref's prefill cannot express W = 1
    assert C.to_swaref(name, C.from_swaref(name, W)) == W
    value = x + 1                             # a value every engine accepts
    assert C.from_swaref(name, C.to_swaref(name, value)) == value


def test_pair_converters_round_trip():
    for W in (1, 2, 3, 100, 4096):
        assert C.from_flash_attention(C.to_flash_attention(W)) == W
        assert C.from_xformers_bottom_right(*C.to_xformers_bottom_right(W)) == W
        assert C.from_hf_transformers(C.to_hf_transformers(W, legacy=True), legacy=True) == W
        assert C.from_attention_gym(C.to_attention_gym(W)) == W
    assert C.from_flash_attention(C.to_flash_attention(None)) is None
    assert C.from_hf_transformers(C.to_hf_transformers(None)) is None


@pytest.mark.parametrize("W", [1, 2, 3, 4, 7, 16])
def test_W_and_W_plus_1_differ_first_at_p_equals_W(W):
    # The field's off-by-one: the two readings agree on every row p < W (both are
    # causal there) and first differ at p = W, which is why tests must reach p >= W.
    pos = np.arange(3 * W + 2)
    a = swaref.window_mask(pos, pos, W)
    b = swaref.window_mask(pos, pos, W + 1)
    rows_differ = (a != b).any(axis=1)
    assert not rows_differ[:W].any()
    assert rows_differ[W], f"W={W}: row p=W must differ"
    assert rows_differ[W:].all()
    # Same through the engines: HF today vs HF legacy, one_file_ref decode vs prefill.
    for lo, hi in ((C.from_hf_transformers(W), C.from_hf_transformers(W, legacy=True)),
                   (C.from_mistral_one_file_ref(W, "decode"), C.from_mistral_one_file_ref(W, "prefill"))):
        d = (swaref.window_mask(pos, pos, lo) != swaref.window_mask(pos, pos, hi)).any(axis=1)
        assert np.argmax(d) == W and d.any()


@pytest.mark.parametrize("fn,bad,kind", [
    (C.from_llama_cpp, 0, "window"),
    (C.from_llama_cpp, -3, "window"),
    (C.from_llama_cpp, 2.0, "window"),
    (C.from_llama_cpp, True, "window"),
    (C.from_vllm, "4096", "window"),
    (C.from_attention_gym, -1, "window"),
    (C.from_flash_attention, (3, 2), "window"),
    (C.from_flash_attention, 3, "window"),
    (C.to_flash_attention, 0, "window"),
    (lambda x: C.from_mistral_one_file_ref(x, "middle"), 4, "argument"),
    (lambda x: C.to_mistral_one_file_ref(x, "prefill"), 1, "window"),
    (lambda x: C.to_swaref("no_such_engine", x), 4, "argument"),
])
def test_converters_reject_bad_values(fn, bad, kind):
    with pytest.raises(swaref.SwarefError) as exc:
        fn(bad)
    assert exc.value.kind == kind


@pytest.mark.parametrize("onnx,ours", [(0, None), (0.0, None), (30.0, 30.0), (0.5, 0.5)])
def test_onnx_softcap_zero_means_off(onnx, ours):
    assert swaref.conventions.from_onnx_softcap(onnx) == ours
    assert swaref.conventions.to_onnx_softcap(ours) == float(onnx)


@pytest.mark.parametrize("bad", [True, -1.0, float("nan"), float("inf"), "30"])
def test_onnx_softcap_rejects(bad):
    with pytest.raises(swaref.SwarefError) as ei:
        swaref.conventions.from_onnx_softcap(bad)
    assert ei.value.kind == "softcap"
