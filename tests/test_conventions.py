"""Other engines' window conventions (spec rule 2).

Each engine's mask is written here the way that engine defines it (from the code
cited in docs/spec.md), and must equal the visibility rule of the converted swaref
window, written here as a brute-force loop over (query, key) from rule 1.  The engines'
own code, where installable (transformers, PyTorch), is run in test_crosscheck_windows.py.
"""
import os

import numpy as np
import pytest
from hypothesis import given, strategies as st

import swaref
from swaref import conventions as C
from swaref.windows import Chunked, Sliding, TwoSided, normalize

N = 40          # positions 0..N-1: long enough to reach p = W + a few for every tested W
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------
# The oracle: rule 1, one (query, key) pair at a time.
# --------------------------------------------------------------------------

def visible(p, j, window):
    """Does the query at p see the key at j under ``window`` (docs/spec.md rule 1, verbatim)?"""
    if window is None:
        return j <= p
    if isinstance(window, Sliding):
        return j <= p and (j < window.sink_tokens or p - window.size < j)
    if isinstance(window, TwoSided):
        return ((window.left is None or p - window.left <= j)
                and (window.right is None or j <= p + window.right))
    if isinstance(window, Chunked):
        return j <= p and j // window.size == p // window.size
    return p - window < j <= p


def rule_mask(window, n=N):
    return np.array([[visible(p, j, window) for j in range(n)] for p in range(n)], dtype=bool)


# --------------------------------------------------------------------------
# Each engine's mask, transcribed from its code (row = query position, column = key position).
# --------------------------------------------------------------------------

def _grid(n):
    return np.arange(n)[:, None], np.arange(n)[None, :]       # i = query (q_idx, p1), j = key (kv_idx, p0)


def fa_mask(window_size, causal=False, attention_chunk=0, n=N):
    """FlashAttention: flash_api.cpp (`if (is_causal) window_size_right = 0`), keys
    [p - left, p + right] (-1 unbounded); FA3 hopper/mask.h clips both ends to p's chunk."""
    i, j = _grid(n)
    left, right = window_size
    if causal:
        right = 0
    ok = np.ones((n, n), dtype=bool)
    if left >= 0:
        ok &= j >= i - left
    if right >= 0:
        ok &= j <= i + right
    if attention_chunk:
        start = (i // attention_chunk) * attention_chunk
        ok &= (j >= start) & (j < start + attention_chunk)
    return ok


def onnx_mask(left_window_size=-1, right_window_size=-1, is_causal=0, n=N):
    """ONNX Attention opset 25 (onnx#8108): p - left <= j <= p + right, -1 unbounded; is_causal adds j <= p."""
    i, j = _grid(n)
    ok = np.ones((n, n), dtype=bool)
    if left_window_size >= 0:
        ok &= j >= i - left_window_size
    if right_window_size >= 0:
        ok &= j <= i + right_window_size
    if is_causal:
        ok &= j <= i
    return ok


def llama_cpp_mask(n_swa, swa_type, causal, n=N):
    """llama-graph.cpp fill_mask: skip if causal_attn && p0 > p1, skip if is_masked_swa(n_swa, type, p0, p1)."""
    out = np.zeros((n, n), dtype=bool)
    for p1 in range(n):
        for p0 in range(n):
            if causal and p0 > p1:
                continue
            if swa_type == "standard":
                masked = p1 - p0 >= n_swa
            elif swa_type == "chunked":
                masked = p0 < (p1 // n_swa) * n_swa
            else:
                half = n_swa // 2
                masked = (p1 - p0) < -half or (p1 - p0) > half
            out[p1, p0] = not masked
    return out


def engine_mask(engine, param, n=N):
    """The mask each engine builds for n tokens at positions 0..n-1 (row = query)."""
    i, j = _grid(n)
    causal = j <= i
    if engine == "flash_attention":
        return fa_mask(param, n=n)
    if engine == "flash_attention_causal":
        return fa_mask(param, causal=True, n=n)
    if engine == "flash_attention_chunk":
        return fa_mask((-1, -1), causal=True, attention_chunk=param, n=n)
    if engine == "onnx":
        return onnx_mask(**param, n=n)
    if engine == "hf_transformers":     # sliding_window_overlay: kv_idx > q_idx - S, plus causal
        return causal & (j > i - param)
    if engine == "hf_transformers_legacy":   # eager before #26792: -sliding_window, keys [p - S, p]
        return causal & (j >= i - param)
    if engine == "hf_transformers_fa_path":  # _process_flash_attention_kwargs: (S - 1, S - 1), causal
        return fa_mask((param - 1, param - 1), causal=True, n=n)
    if engine == "hf_attention_chunk_size":  # chunked_overlay (no padding) plus causal
        return causal & ((j // param) == (i // param))
    if engine == "hf_bidirectional_sliding_window":   # abs(q_idx - kv_idx) <= S
        return np.abs(i - j) <= param
    if engine == "modernbert":          # config.sliding_window = L // 2 -> bidirectional overlay
        return engine_mask("hf_bidirectional_sliding_window", param // 2, n)
    if engine == "modernbert_fa_path":  # ModernBertAttention: sliding_window = L // 2 + 1 -> (S - 1, S - 1)
        s = param // 2 + 1
        return fa_mask((s - 1, s - 1), causal=False, n=n)
    if engine == "longformer":          # w / 2 on each side of the diagonal
        return np.abs(i - j) <= param // 2
    if engine == "llama_cpp":
        return llama_cpp_mask(param, "standard", True, n)
    if engine == "llama_cpp_chunked":
        return llama_cpp_mask(param, "chunked", True, n)
    if engine == "llama_cpp_symmetric":
        return llama_cpp_mask(param, "symmetric", False, n)
    if engine == "vllm":                # decoder: FlashAttention (S - 1, 0)
        return fa_mask((param - 1, 0), causal=True, n=n)
    if engine == "vllm_encoder_only":   # ENCODER_ONLY: (S - 1, S - 1), causal=False
        return fa_mask((param - 1, param - 1), causal=False, n=n)
    if engine == "xformers_local":      # tril(0) then triu(-S + 1)
        return np.triu(np.tril(np.ones((n, n), dtype=bool), 0), -param + 1)
    if engine == "xformers_bottom_right":    # window_left=l, window_right=r: keys [p - l, p + r]
        left, right = param
        return (j >= i - left) & (j <= i + right)
    if engine == "mistral_one_file_ref_prefill":   # triu(tril(ones), diagonal=-S)
        return np.triu(np.tril(np.ones((n, n), dtype=bool)), -param)
    if engine == "mistral_one_file_ref_decode":    # an S-slot ring written before attending
        return causal & (j >= i - param + 1)
    if engine == "attention_gym":       # q_idx - kv_idx <= L, plus causal
        return causal & (i - j <= param)
    raise AssertionError(engine)


CONVERTERS = {
    "flash_attention": C.from_flash_attention,
    "flash_attention_causal": lambda x: C.from_flash_attention(x, causal=True),
    "flash_attention_chunk": lambda c: C.from_flash_attention(causal=True, attention_chunk=c),
    "onnx": lambda attrs: C.from_onnx(**attrs),
    "hf_transformers": C.from_hf_transformers,
    "hf_transformers_legacy": lambda x: C.from_hf_transformers(x, legacy=True),
    "hf_transformers_fa_path": C.from_hf_transformers,
    "hf_attention_chunk_size": C.from_hf_attention_chunk_size,
    "hf_bidirectional_sliding_window": C.from_hf_bidirectional_sliding_window,
    "modernbert": C.from_modernbert,
    "modernbert_fa_path": C.from_modernbert,
    "longformer": C.from_longformer,
    "llama_cpp": C.from_llama_cpp,
    "llama_cpp_chunked": lambda n: C.from_llama_cpp(n, "chunked"),
    "llama_cpp_symmetric": lambda n: C.from_llama_cpp(n, "symmetric"),
    "vllm": C.from_vllm,
    "vllm_encoder_only": lambda s: C.from_vllm(s, "encoder_only"),
    "xformers_local": C.from_xformers_local,
    "xformers_bottom_right": lambda lr: C.from_xformers_bottom_right(*lr),
    "mistral_one_file_ref_prefill": lambda x: C.from_mistral_one_file_ref(x, "prefill"),
    "mistral_one_file_ref_decode": lambda x: C.from_mistral_one_file_ref(x, "decode"),
    "attention_gym": C.from_attention_gym,
}


def params(engine):
    if engine in ("flash_attention", "flash_attention_causal"):
        return [(left, right) for left in (-1, 0, 1, 2, 5, 11) for right in (-1, 0, 1, 3, 7)]
    if engine == "onnx":
        return [dict(left_window_size=a, right_window_size=b, is_causal=c)
                for a in (-1, 0, 2, 5) for b in (-1, 0, 1, 4) for c in (0, 1)]
    if engine == "xformers_bottom_right":
        return [(a, b) for a in (0, 1, 5) for b in (0, 1, 3)]
    if engine in ("modernbert", "modernbert_fa_path"):
        return [0, 2, 3, 4, 8, 13, 16]
    if engine == "longformer":
        return [2, 4, 8, 16]
    if engine in ("attention_gym", "hf_transformers_legacy", "hf_bidirectional_sliding_window"):
        return [0, 1, 2, 5, 11]
    return [1, 2, 3, 4, 6, 7, 11]


@pytest.mark.parametrize("engine", sorted(CONVERTERS))
def test_converted_window_reproduces_the_engines_mask(engine):
    pos = np.arange(N)
    for param in params(engine):
        window = CONVERTERS[engine](param)
        want = engine_mask(engine, param)
        np.testing.assert_array_equal(rule_mask(window), want, err_msg=f"{engine}({param!r}) -> {window!r}")
        np.testing.assert_array_equal(swaref.window_mask(pos, pos, window), want,
                                      err_msg=f"swaref.window_mask, {engine}({param!r}) -> {window!r}")


# Wrong converters that real code has shipped or that an easy misreading gives: the mask
# comparison above must catch each (so it can fail).
WRONG = {
    "FlashAttention (S-1, S-1) read as two-sided under causal": (
        "hf_transformers_fa_path", lambda s: TwoSided(s - 1, s - 1)),
    "FlashAttention causal right side kept": (
        "flash_attention_causal", lambda lr: normalize(TwoSided(None if lr[0] < 0 else lr[0], None if lr[1] < 0 else lr[1]))),
    "chunked read as a sliding window of C": ("hf_attention_chunk_size", lambda c: c),
    "chunk boundary off by one": ("llama_cpp_chunked", lambda c: Chunked(c + 1)),
    "ModernBERT local_attention read as the one-sided size": ("modernbert", lambda L: normalize(TwoSided(L, L))),
    "ModernBERT one short (vLLM before #44040)": ("modernbert_fa_path", lambda L: normalize(TwoSided(max(L // 2 - 1, 0), max(L // 2 - 1, 0)))),
    "Longformer w on each side": ("longformer", lambda w: TwoSided(w, w)),
    "llama.cpp SYMMETRIC read as n_swa each side": ("llama_cpp_symmetric", lambda n: TwoSided(n, n)),
    "bidirectional S read as S keys": ("hf_bidirectional_sliding_window", lambda s: normalize(TwoSided(s // 2, s // 2))),
    "ONNX is_causal ignored": ("onnx", lambda a: normalize(TwoSided(None if a["left_window_size"] < 0 else a["left_window_size"],
                                                                  None if a["right_window_size"] < 0 else a["right_window_size"]))),
    "vLLM encoder-only S each side": ("vllm_encoder_only", lambda s: TwoSided(s, s)),
}


@pytest.mark.parametrize("name", sorted(WRONG))
def test_a_wrong_converter_is_caught(name):
    engine, wrong = WRONG[name]
    assert any(not np.array_equal(rule_mask(wrong(p)), engine_mask(engine, p)) for p in params(engine)), name


def test_the_table_values():
    assert C.from_flash_attention((4095, 0)) == 4096
    assert C.from_flash_attention((-1, 0)) is None
    assert C.from_flash_attention((4095, 4095), causal=True) == 4096       # transformers' FA path
    assert C.from_flash_attention((64, 64)) == TwoSided(64, 64)
    assert C.from_flash_attention() == TwoSided(None, None)
    assert C.from_flash_attention(causal=True, attention_chunk=8192) == Chunked(8192)
    assert C.from_flash_attention((8191, 0), causal=True, attention_chunk=8192) == Chunked(8192)
    assert C.to_flash_attention(4096) == (4095, 0) and C.to_flash_attention(None) == (-1, 0)
    assert C.to_flash_attention(TwoSided(64, None)) == (64, -1)
    assert C.flash_attention_kwargs(4096) == {"window_size": (4095, 0), "causal": True}
    assert C.flash_attention_kwargs(TwoSided(3, 2)) == {"window_size": (3, 2), "causal": False}
    assert C.flash_attention_kwargs(Chunked(8192)) == {"window_size": (-1, -1), "causal": True, "attention_chunk": 8192}
    assert C.from_onnx(4095, 0, 1) == 4096 and C.from_onnx(4095, -1, 1) == 4096
    assert C.from_onnx(64, 64) == TwoSided(64, 64) and C.from_onnx() == TwoSided(None, None)
    assert C.from_onnx(is_causal=1) is None
    assert C.to_onnx(4096) == {"left_window_size": 4095, "right_window_size": 0, "is_causal": 1}
    assert C.to_onnx(TwoSided(None, 3)) == {"left_window_size": -1, "right_window_size": 3, "is_causal": 0}
    assert C.from_hf_transformers(4096) == 4096
    assert C.from_hf_transformers(4096, legacy=True) == 4097
    assert C.from_hf_transformers(None) is None
    assert C.from_hf_attention_chunk_size(8192) == Chunked(8192)
    assert C.from_hf_bidirectional_sliding_window(64) == TwoSided(64, 64)
    assert C.from_modernbert(128) == TwoSided(64, 64) and C.to_modernbert(TwoSided(64, 64)) == 128
    assert C.from_longformer(512) == TwoSided(256, 256)
    assert C.from_llama_cpp(4096) == 4096
    assert C.from_llama_cpp(8192, "chunked") == Chunked(8192)
    assert C.from_llama_cpp(256, "symmetric") == TwoSided(128, 128)
    assert C.from_llama_cpp(256, "symmetric", causal=True) == 129
    assert C.from_llama_cpp(4096, causal=False) == TwoSided(4095, None)
    assert C.from_vllm(4096) == 4096
    assert C.from_vllm(65, "encoder_only") == TwoSided(64, 64)
    assert C.from_xformers_local(4096) == 4096
    assert C.from_xformers_bottom_right(4095) == 4096
    assert C.from_mistral_one_file_ref(4096, "prefill") == 4097
    assert C.from_mistral_one_file_ref(4096, "decode") == 4096
    assert C.from_attention_gym(4095) == 4096
    assert C.from_mistral_paper(4096) == 4097


@pytest.mark.parametrize("layer_type,want", [("full_attention", None), ("sliding_attention", 128),
                                              ("chunked_attention", Chunked(8192))])
def test_hf_layer_types(layer_type, want):
    config = {"sliding_window": 128, "attention_chunk_size": 8192}
    assert C.from_hf_layer_type(layer_type, config) == want


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


# --------------------------------------------------------------------------
# Round trips, by name.
# --------------------------------------------------------------------------

sizes = st.integers(1, 10 ** 6)
sides = st.one_of(st.none(), st.integers(0, 10 ** 6))
WINDOWS = st.one_of(
    st.none(), sizes,
    st.builds(Sliding, sizes, st.integers(0, 64)),
    st.builds(TwoSided, sides, sides),
    st.builds(Chunked, sizes))

#: name -> values that name's engine writes (canonical: the ones from_swaref gives back).
VALUES = {
    "swaref": WINDOWS.map(normalize),
    "flash_attention": st.tuples(st.integers(-1, 10 ** 6), st.integers(-1, 10 ** 6)),
    "flash_attention_causal": st.tuples(st.integers(-1, 10 ** 6), st.just(0)),
    "flash_attention_left": st.integers(-1, 10 ** 6),
    "flash_attention_chunk": sizes,
    "onnx": st.one_of(
        st.builds(lambda a: dict(left_window_size=a, right_window_size=0, is_causal=1), st.integers(-1, 10 ** 6)),
        st.builds(lambda a, b: dict(left_window_size=a, right_window_size=b, is_causal=0),
                  st.integers(-1, 10 ** 6), st.integers(-1, 10 ** 6).filter(lambda b: b != 0))),
    "hf_transformers": st.one_of(st.none(), sizes),
    "hf_transformers_legacy": st.integers(0, 10 ** 6),
    "hf_attention_chunk_size": st.one_of(st.none(), sizes),
    "hf_bidirectional_sliding_window": st.integers(0, 10 ** 6),
    "modernbert": st.integers(0, 10 ** 6).map(lambda h: 2 * h),
    "longformer": sizes.map(lambda h: 2 * h),
    "llama_cpp": sizes,
    "llama_cpp_chunked": sizes,
    "llama_cpp_symmetric": sizes.map(lambda h: 2 * h),
    "vllm": st.one_of(st.none(), sizes),
    "vllm_encoder_only": st.one_of(st.none(), sizes),
    "xformers_local": sizes,
    "xformers_bottom_right_left": st.integers(0, 10 ** 6),
    "attention_gym": st.integers(0, 10 ** 6),
    "mistral_one_file_ref_prefill": sizes,
    "mistral_one_file_ref_decode": sizes,
    "mistral_paper_inclusive": sizes,
}


def test_every_convention_has_round_trip_values():
    assert set(VALUES) == set(C.CONVENTIONS)


@pytest.mark.parametrize("name", sorted(C.CONVENTIONS))
@given(data=st.data())
def test_every_converter_round_trips(name, data):
    # engine -> swaref -> engine for the engine's canonical values ...
    value = data.draw(VALUES[name], label="value")
    assert C.from_swaref(name, C.to_swaref(name, value)) == value
    # ... and swaref -> engine -> swaref for every window the engine can express; the others
    # are refused with kind "window", never mistranslated.
    window = data.draw(WINDOWS, label="window")
    try:
        there = C.from_swaref(name, window)
    except swaref.SwarefError as e:
        assert e.kind == "window", e
    else:
        assert C.to_swaref(name, there) == normalize(window)


def test_pair_converters_round_trip():
    for W in (1, 2, 3, 100, 4096):
        assert C.from_flash_attention(C.to_flash_attention(W)) == W
        assert C.from_flash_attention(**C.flash_attention_kwargs(W)) == W
        assert C.from_xformers_bottom_right(*C.to_xformers_bottom_right(W)) == W
        assert C.from_hf_transformers(C.to_hf_transformers(W, legacy=True), legacy=True) == W
        assert C.from_attention_gym(C.to_attention_gym(W)) == W
        assert C.from_onnx(**C.to_onnx(W)) == W
    for w in (None, TwoSided(3, 5), TwoSided(None, 2), Chunked(7)):
        assert C.from_flash_attention(**C.flash_attention_kwargs(w)) == w
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
    (lambda n: C.from_llama_cpp(n, "sliding"), 4, "argument"),
    (lambda n: C.from_llama_cpp(n, "chunked", causal=False), 4, "window"),
    (C.from_vllm, "4096", "window"),
    (lambda s: C.from_vllm(s, "encoder"), 4, "argument"),
    (C.from_attention_gym, -1, "window"),
    (C.from_flash_attention, (3, -2), "window"),
    (C.from_flash_attention, 3, "window"),
    (C.from_flash_attention, (3, 2, 1), "window"),
    (lambda ws: C.from_flash_attention(ws, causal=2), (3, 0), "argument"),
    (lambda c: C.from_flash_attention(attention_chunk=c), 8, "window"),                  # not causal
    (lambda c: C.from_flash_attention((3, 0), causal=True, attention_chunk=c), 8, "window"),  # window in chunk
    (C.to_flash_attention, 0, "window"),
    (C.to_flash_attention, Chunked(4), "window"),
    (C.to_flash_attention, Sliding(4, 2), "window"),
    (lambda a: C.from_onnx(left_window_size=a), -2, "window"),
    (lambda a: C.from_onnx(is_causal=a), 2, "argument"),
    (lambda a: C.to_swaref("onnx", a), {"left_window_size": 3, "window": 2}, "argument"),
    (lambda a: C.to_swaref("onnx", a), (3, 0), "window"),
    (C.to_onnx, Chunked(8), "window"),
    (C.to_hf_transformers, TwoSided(2, 2), "window"),
    (C.to_hf_transformers, Sliding(8, 4), "window"),
    (C.to_hf_attention_chunk_size, 8, "window"),
    (C.from_longformer, 5, "window"),
    (C.from_longformer, 0, "window"),
    (C.to_modernbert, TwoSided(3, 4), "window"),
    (lambda w: C.to_llama_cpp(w, "symmetric"), TwoSided(None, None), "window"),
    (lambda w: C.from_hf_layer_type(w, {}), "local_attention", "argument"),
    (lambda x: C.from_mistral_one_file_ref(x, "middle"), 4, "argument"),
    (lambda x: C.to_mistral_one_file_ref(x, "prefill"), 1, "window"),
    (lambda x: C.to_swaref("no_such_engine", x), 4, "argument"),
    (lambda x: C.from_swaref("flash_attention_chunk", x), 4, "window"),
])
def test_converters_reject_bad_values(fn, bad, kind):
    with pytest.raises(swaref.SwarefError) as exc:
        fn(bad)
    assert exc.value.kind == kind


def test_every_name_is_documented_in_help_and_the_spec():
    import pydoc
    text = pydoc.render_doc(C, renderer=pydoc.plaintext)
    with open(os.path.join(ROOT, "docs", "spec.md"), encoding="utf-8") as f:
        spec = f.read()
    rule2 = spec[spec.index("## Rule 2."):spec.index("## Rule 3.")]
    for name in C.CONVENTIONS:
        assert f"``{name}``" in text, f"help(swaref.conventions) does not list {name!r}"
        assert f"`{name}`" in rule2, f"docs/spec.md rule 2 does not list {name!r}"


@pytest.mark.parametrize("onnx,ours", [(0, None), (0.0, None), (30.0, 30.0), (0.5, 0.5)])
def test_onnx_softcap_zero_means_off(onnx, ours):
    assert swaref.conventions.from_onnx_softcap(onnx) == ours
    assert swaref.conventions.to_onnx_softcap(ours) == float(onnx)


@pytest.mark.parametrize("bad", [True, -1.0, float("nan"), float("inf"), "30"])
def test_onnx_softcap_rejects(bad):
    with pytest.raises(swaref.SwarefError) as ei:
        swaref.conventions.from_onnx_softcap(bad)
    assert ei.value.kind == "softcap"


@pytest.mark.parametrize("window", [None, 1, 5, Sliding(5, 2), Sliding(3, 7), TwoSided(2, 3), TwoSided(None, 1),
                                    TwoSided(4, None), TwoSided(None, None), Chunked(4), Chunked(1)])
def test_flex_attention_mask_mod_on_ints(window):
    # The mask_mod uses only operators, so it runs on Python ints as well as tensors;
    # test_crosscheck_windows.py runs it through PyTorch's create_block_mask.
    mod = C.flex_attention_mask_mod(window)
    got = np.array([[bool(mod(0, 0, p, j)) for j in range(N)] for p in range(N)])
    np.testing.assert_array_equal(got, rule_mask(normalize(window)))
