"""swaref._linear (a model's linear layers) and swaref.models.bf16, against independent computations.

* bfloat16 widening, compiled and NumPy, bit for bit against torch's own bfloat16 on all 65,536
  bit patterns; rounding float32 -> bfloat16 against torch's ``.to(torch.bfloat16)`` on ties,
  subnormals, the overflow edge, infinities and NaN (a truncating twin fails the check);
* the streaming micro-kernel of every ISA this CPU runs (``rows_kernel``), and ``linear`` on both
  sides of SMALL_T, against float64 NumPy within the dot-product bound
  gamma_{n+1} (sum |x_i w_i| + |b|), gamma_k = k u / (1 - k u), u = 2^-24 (any summation order,
  FMA or not); a twin that drops one term fails it;
* the kernel's invariances: a token's row is the same bits whatever T <= SMALL_T, the thread count
  and the rows a thread takes; float32 W and its bfloat16-widened copy give the same bits as the
  bfloat16 kernel on the same values;
* the many-token kernel (AVX-512, T > SMALL_T): each output bit for bit one FMA chain in order,
  against exact rational arithmetic rounded once per step (a backwards chain and BLAS's order fail
  it), within the bound, the same bits whatever T, threads and bfloat16 widening;
* bad arguments are refused naming them.
"""
import os

import numpy as np
import pytest
from hypothesis import given, strategies as st

from swaref import SwarefError, SwarefTypeError, _linear
from swaref.models import bf16 as B

U = 2.0 ** -24


def _torch():
    """torch for the crosscheck-marked comparisons: required where CI runs them, else a skip."""
    if os.environ.get("SWAREF_REQUIRE_CROSSCHECK") == "1":
        import torch
        return torch
    return pytest.importorskip("torch")


def torch_widen(bits):
    torch = _torch()
    return torch.from_numpy(bits.view(np.int16).copy()).view(torch.bfloat16).float().numpy()


def torch_round(a):
    torch = _torch()
    return torch.from_numpy(a.copy()).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def widen_by_definition(bits):
    """bfloat16 is the top half of a float32: its bits, shifted up 16."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def round_nearest_even(a):
    """float32 -> bfloat16 bits, round to nearest, ties to even, written from the definition on the
    integer bits (a carry out of the mantissa rounds up the exponent, to inf past the largest)."""
    u = a.view(np.uint32)
    upper, lower = u >> 16, u & 0xFFFF
    up = (lower > 0x8000) | ((lower == 0x8000) & (upper & 1 == 1))
    return (upper + up).astype(np.uint16)


def same_bits(a, b):
    return np.array_equal(np.asarray(a, np.float32).view(np.uint32), np.asarray(b, np.float32).view(np.uint32))


# ----------------------------------------------------------------- bfloat16

@pytest.mark.parametrize("oracle", ["definition", pytest.param("torch", marks=pytest.mark.crosscheck)])
def test_widening_is_exact_on_every_bit_pattern(oracle):
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    want = widen_by_definition(bits) if oracle == "definition" else torch_widen(bits)
    assert same_bits(B.widen(bits), want)
    assert same_bits(_linear.widen(bits), want)
    assert same_bits(_linear.widen(bits.reshape(256, 256)).reshape(-1), want)


EDGES = np.array([0.0, -0.0, 1.0, 1.00390625, 1.001953125, 1.005859375, 3.3895314e38, 3.3961776e38, 3.4e38,
                  np.finfo(np.float32).max, 1e-40, -1e-40, 1.1754944e-38, np.inf, -np.inf], dtype=np.float32)


@pytest.mark.parametrize("oracle", ["definition", pytest.param("torch", marks=pytest.mark.crosscheck)])
def test_rounding_to_bfloat16_is_nearest_even(oracle):
    rounded = round_nearest_even if oracle == "definition" else torch_round
    rng = np.random.default_rng(0)
    ties = (rng.integers(0, 1 << 16, 2000, dtype=np.uint32) << 16 | 0x8000).view(np.float32)  # exact halves
    vals = np.concatenate([EDGES, -EDGES, ties, rng.standard_normal(5000).astype(np.float32) * 1e3,
                           rng.integers(0, 1 << 32, 5000, dtype=np.uint64).astype(np.uint32).view(np.float32)])
    vals = vals[np.isfinite(vals) | np.isinf(vals)]
    assert np.array_equal(B.to_bfloat16(vals), rounded(vals))
    # The check can fail: truncation (keep the top half) differs on the ties.
    trunc = (vals.view(np.uint32) >> 16).astype(np.uint16)
    assert not np.array_equal(trunc, rounded(vals))


def test_rounding_keeps_nan_a_nan():
    nans = np.array([0x7FFFFFFF, 0x7F800001, 0xFFFFFFFF, 0x7FC00000], dtype=np.uint32).view(np.float32)
    assert np.isnan(B.widen(B.to_bfloat16(nans))).all()


def test_bf16_helpers_refuse_other_dtypes():
    with pytest.raises(SwarefTypeError, match="float32 array, got float64"):
        B.to_bfloat16(np.zeros(3))
    with pytest.raises(SwarefTypeError, match="uint16 array, got int16"):
        B.widen(np.zeros(3, np.int16))
    with pytest.raises(SwarefTypeError, match="uint16 array of bfloat16 bits, got float32"):
        _linear.widen(np.zeros(3, np.float32))


# ----------------------------------------------------------------- products

def bound(x, w, b):
    """gamma_{n+1} (|x| |w|^T + |b|): the float32 dot product's error bound, any order, FMA or not."""
    n = x.shape[1] + 1
    mag = np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64)).T
    if b is not None:
        mag = mag + np.abs(b.astype(np.float64))
    return n * U / (1 - n * U) * mag


def exact(x, w, b):
    y = x.astype(np.float64) @ w.astype(np.float64).T
    return y if b is None else y + b


def assert_within_bound(got, x, wf, b):
    err = np.abs(got.astype(np.float64) - exact(x, wf, b))
    lim = bound(x, wf, b)
    bad = ~(err <= lim)
    assert not bad.any(), f"max excess {np.max(err - lim):.3g} at {tuple(np.argwhere(bad)[0])}"


def case(rng, T, n, out, biased, bf16):
    x = rng.standard_normal((T, n)).astype(np.float32)
    w = rng.standard_normal((out, n)).astype(np.float32)
    b = rng.standard_normal(out).astype(np.float32) if biased else None
    if bf16:
        w = B.to_bfloat16(w)
    return x, w, b, (B.widen(w) if bf16 else w)


@pytest.fixture
def many_threads():
    old = _linear.min_work_per_thread(1)
    yield
    _linear.min_work_per_thread(old)


@pytest.mark.parametrize("isa", _linear.supported_isas())
@given(T=st.integers(1, 9), n=st.integers(1, 70), out=st.integers(1, 23), biased=st.booleans(), bf16=st.booleans(),
       threads=st.sampled_from([1, 2, 3]), seed=st.integers(0, 2**32 - 1))
def test_rows_kernel_within_the_dot_product_bound(isa, T, n, out, biased, bf16, threads, seed):
    rng = np.random.default_rng(seed)
    x, w, b, wf = case(rng, T, n, out, biased, bf16)
    old_isa, old_work = _linear.set_isa(isa), _linear.min_work_per_thread(1)
    try:
        got = _linear.rows_kernel(x, w, b, num_threads=threads)
        one = [_linear.rows_kernel(x[t:t + 1], w, b, num_threads=1) for t in range(T)]
    finally:
        _linear.set_isa(old_isa)
        _linear.min_work_per_thread(old_work)
    assert got.dtype == np.float32 and got.shape == (T, out)
    assert_within_bound(got, x, wf, b)
    # A token's row is the same bits alone, in a batch, on any number of threads.
    assert same_bits(np.concatenate(one), got)


def test_the_bound_can_fail():
    rng = np.random.default_rng(1)
    x, w, b, wf = case(rng, 3, 40, 9, True, False)
    y = _linear.rows_kernel(x, w, b)
    assert_within_bound(y, x, wf, b)
    dropped = y - (x[:, -1:] * w[:, -1])             # a twin that forgets the last term
    with pytest.raises(AssertionError, match="max excess"):
        assert_within_bound(dropped, x, wf, b)


def test_bfloat16_kernel_equals_float32_kernel_on_the_widened_weights():
    rng = np.random.default_rng(2)
    for isa in _linear.supported_isas():
        old = _linear.set_isa(isa)
        try:
            x, w, b, wf = case(rng, 5, 131, 37, True, True)
            assert same_bits(_linear.rows_kernel(x, w, b), _linear.rows_kernel(x, wf, b)), isa
        finally:
            _linear.set_isa(old)


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("T", [1, 16, 17, 33])
def test_linear_on_both_sides_of_small_t(T, bf16, many_threads):
    rng = np.random.default_rng(T)
    x, w, b, wf = case(rng, T, 77, 45, True, bf16)
    old = _linear.widen_block_elements(77 * 10)      # ten rows per block: crosses block boundaries
    try:
        got = _linear.linear(x, w, b, num_threads=2)
    finally:
        _linear.widen_block_elements(old)
    assert_within_bound(got, x, wf, b)
    if T <= _linear.SMALL_T:
        assert same_bits(got, _linear.rows_kernel(x, w, b, num_threads=1))


def test_large_t_bfloat16_equals_numpy_on_widened_blocks():
    # The BLAS path (every ISA but AVX-512) widens blocks of rows exactly: each block's product is
    # NumPy's on those rows.
    rng = np.random.default_rng(3)
    x, w, _, wf = case(rng, 20, 64, 50, False, True)
    old, old_isa = _linear.widen_block_elements(64 * 16), _linear.set_isa("baseline")
    try:
        got = _linear.linear(x, w)
    finally:
        _linear.widen_block_elements(old)
        _linear.set_isa(old_isa)
    want = np.concatenate([x @ wf[o:o + 16].T for o in range(0, 50, 16)], axis=1)
    assert same_bits(got, want)


# ----------------------------------------------------------------- the many-token kernel (AVX-512)

needs_gemm = pytest.mark.skipif("avx512" not in _linear.supported_isas(),
                                reason="the many-token kernel is AVX-512 only; elsewhere linear takes BLAS (above)")


def round_f32(q):
    """An exact rational -> the nearest float32, ties to even (float(q) alone would round twice)."""
    from fractions import Fraction
    f = np.float32(float(q))
    cands = [np.nextafter(f, np.float32(-np.inf)), f, np.nextafter(f, np.float32(np.inf))]
    dist = [abs(Fraction(float(c)) - q) for c in cands]
    best = min(dist)
    ties = [c for c, d in zip(cands, dist) if d == best]
    return min(ties, key=lambda c: int(np.float32(c).view(np.uint32)) & 1)


def fma_chain(xr, wr, b):
    """One output by its definition: acc = round(x_i w_i + acc) for i = 0, 1, ..., in exact rational
    arithmetic rounded once per step, then round(acc + b)."""
    from fractions import Fraction
    acc = np.float32(0.0)
    for xi, wi in zip(xr, wr):
        acc = round_f32(Fraction(float(xi)) * Fraction(float(wi)) + Fraction(float(acc)))
    return acc if b is None else round_f32(Fraction(float(acc)) + Fraction(float(b)))


@needs_gemm
@pytest.mark.parametrize("bf16", [False, True])
def test_gemm_kernel_is_one_fma_chain_per_output(bf16):
    rng = np.random.default_rng(11)
    x, w, b, wf = case(rng, 13, 37, 5, True, bf16)
    got = _linear.gemm_kernel(x, w, b, num_threads=2)
    want = np.array([[fma_chain(x[t], wf[o], b[o]) for o in range(5)] for t in range(13)], np.float32)
    assert same_bits(got, want), f"first mismatch at {tuple(np.argwhere(got != want)[0])}"
    # The oracle tells chains apart: the same chain backwards, or without FMA (each product
    # rounded before it is added), is not this one.
    backwards = np.array([[fma_chain(x[t, ::-1], wf[o, ::-1], b[o]) for o in range(5)] for t in range(13)])
    no_fma = np.zeros((13, 5), np.float32)
    for i in range(37):
        no_fma += x[:, i:i + 1] * wf[:, i]
    assert not same_bits(got, backwards) and not same_bits(got, no_fma + b)


@needs_gemm
@given(T=st.integers(1, 40), n=st.integers(1, 70), out=st.integers(1, 70), biased=st.booleans(),
       bf16=st.booleans(), threads=st.sampled_from([1, 2, 3]), seed=st.integers(0, 2**32 - 1))
def test_gemm_kernel_within_the_bound_and_the_same_bits_whatever_t_and_threads(T, n, out, biased, bf16, threads,
                                                                                 seed):
    rng = np.random.default_rng(seed)
    x, w, b, wf = case(rng, T, n, out, biased, bf16)
    old = _linear.min_work_per_thread(1)
    try:
        got = _linear.gemm_kernel(x, w, b, num_threads=threads)
        one = [_linear.gemm_kernel(x[t:t + 1], w, b, num_threads=1) for t in range(T)]
        widened = _linear.gemm_kernel(x, wf, b, num_threads=1)
    finally:
        _linear.min_work_per_thread(old)
    assert got.dtype == np.float32 and got.shape == (T, out)
    assert_within_bound(got, x, wf, b)
    # Tiles of 12 tokens and panels of 32 outputs, split over threads, change no bit; nor does
    # bfloat16 against its exact widening.
    assert same_bits(np.concatenate(one), got) and same_bits(widened, got)


@needs_gemm
def test_linear_above_small_t_is_the_gemm_on_avx512_and_blas_below():
    rng = np.random.default_rng(12)
    x, w, b, _ = case(rng, 33, 70, 45, True, False)
    assert same_bits(_linear.linear(x, w, b, num_threads=2), _linear.gemm_kernel(x, w, b, num_threads=1))
    old = _linear.set_isa("baseline")
    try:
        assert same_bits(_linear.linear(x, w, b), x @ w.T + b)
        with pytest.raises(SwarefError, match="needs the avx512 ISA; this one runs 'baseline'"):
            _linear.gemm_kernel(x, w, b)
    finally:
        _linear.set_isa(old)


def test_non_contiguous_inputs_are_read_correctly():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 40)).astype(np.float32)[:, ::2]
    w = rng.standard_normal((12, 20)).astype(np.float32).T.copy().T   # Fortran order
    assert_within_bound(_linear.linear(x, w), x, w, None)


@pytest.mark.parametrize("args, kind, msg", [
    ((np.zeros((2, 3)), np.zeros((4, 3), np.float32)), "dtype", r"x must be a float32 array \[T, in\], got float64"),
    ((np.zeros(3, np.float32), np.zeros((4, 3), np.float32)), "dtype", r"x must be a float32 array \[T, in\]"),
    ((np.zeros((2, 3), np.float32), np.zeros((4, 3), np.int16)), "dtype", "w must be a float32 or bfloat16"),
    ((np.zeros((2, 3), np.float32), np.zeros((4, 5), np.float32)), "shape", r"w must have shape \[out, 3\]"),
    ((np.zeros((2, 3), np.float32), np.zeros((4, 3), np.float32), np.zeros(5, np.float32)), "dtype",
     r"b must be None or a float32 array of shape \(4,\)"),
])
def test_bad_arguments_are_refused_naming_them(args, kind, msg):
    with pytest.raises((SwarefError, SwarefTypeError), match=msg) as e:
        _linear.linear(*args)
    assert e.value.kind == kind


def test_bad_threads_and_isa_are_refused():
    x, w = np.zeros((1, 3), np.float32), np.zeros((2, 3), np.float32)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(SwarefError, match="num_threads must be None or an int >= 1"):
            _linear.linear(x, w, num_threads=bad)
    with pytest.raises(SwarefError, match="isa must be one of"):
        _linear.set_isa("avx1024")


def test_the_best_isa_is_in_use_and_named():
    assert _linear.isa() == _linear.supported_isas()[-1]
    assert _linear.isa() in _linear.ISAS


def test_empty_shapes():
    assert _linear.linear(np.zeros((2, 0), np.float32), np.zeros((3, 0), np.float32)).tolist() == [[0.0] * 3] * 2
    assert _linear.linear(np.zeros((2, 4), np.float32), np.zeros((0, 4), np.uint16)).shape == (2, 0)


def test_compiled_rms_norm_is_the_formula():
    # (x * r) * w with r = float32(1 / sqrt(mean(x^2) + eps)), the mean in float64: written out here.
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((6, 97)) * 10.0 ** rng.integers(-3, 4, (6, 1))).astype(np.float32)
    w = rng.standard_normal(97).astype(np.float32)
    r = np.array([np.float32(1.0 / np.sqrt(sum(float(v) ** 2 for v in row) / 97 + 1e-5)) for row in x])
    assert same_bits(_linear.rms_norm(x, w, 1e-5), (x * r[:, None]) * w)
    assert not same_bits(_linear.rms_norm(x, w, 1e-6), (x * r[:, None]) * w)    # the check sees eps
    with pytest.raises(SwarefTypeError, match=r"w must be a float32 array of shape \(97,\)"):
        _linear.rms_norm(x, w[:-1], 1e-5)


# ----------------------------------------------------------------- a decode step's layer, fused

def rope_tables(T, R, layout, seed):
    """Rotation tables as swaref.models.rope.Rotation lays them out, for T random positions."""
    from swaref.models.rope import rotation
    pos = np.sort(np.random.default_rng(seed).integers(0, 200_000, T))
    return rotation(pos, R, 10000.0, layout), pos


@given(T=st.integers(1, 5), H=st.integers(1, 4), D=st.sampled_from([2, 8, 16, 18]), data=st.data(),
       layout=st.sampled_from(["half", "interleaved"]), seed=st.integers(0, 2**32 - 1))
def test_compiled_rope_is_the_pairwise_formula_bit_for_bit(T, H, D, data, layout, seed):
    from test_models_bf16 import pairwise
    R = data.draw(st.sampled_from([r for r in range(2, D + 1, 2)]), label="R")
    rot, pos = rope_tables(T, R, layout, seed)
    x = np.random.default_rng(seed).standard_normal((T, H, D)).astype(np.float32)
    got = _linear.rope(x, rot.cos, rot.sin_signed, layout == "interleaved")
    assert same_bits(got, pairwise(x, pos, 10000.0, layout, R))
    assert same_bits(got[..., R:], x[..., R:])


def test_the_compiled_rope_check_can_fail():
    from test_models_bf16 import pairwise
    rot, pos = rope_tables(3, 16, "half", 1)
    x = np.random.default_rng(1).standard_normal((3, 2, 16)).astype(np.float32)
    # The interleaved partner (j ^ 1) on the half layout's tables: other pairs, other bits.
    assert not same_bits(_linear.rope(x, rot.cos, rot.sin_signed, True), pairwise(x, pos, 10000.0, "half", 16))


def layer_case(rng, T, d=40, Hq=4, Hkv=2, D=8, inter=24, biased=True, bf16=True):
    """A layer's weights (every other one in bfloat16, biases or not) and a residual stream h [T, d]."""
    def mat(o, i, k):
        w = rng.standard_normal((o, i)).astype(np.float32)
        return B.to_bfloat16(w) if bf16 and k % 2 else w

    def bias(o):
        return rng.standard_normal(o).astype(np.float32) if biased else None
    shapes = dict(wq=(Hq * D, d), wk=(Hkv * D, d), wv=(Hkv * D, d), wo=(d, Hq * D), w_gate=(inter, d),
                  w_up=(inter, d), w_down=(d, inter))
    lw = {n: mat(*s, k) for k, (n, s) in enumerate(shapes.items())}
    lw.update({"b" + n[1:]: bias(s[0]) for n, s in shapes.items()})
    lw.update(attn_norm=rng.standard_normal(d).astype(np.float32), mlp_norm=rng.standard_normal(d).astype(np.float32))
    return lw, rng.standard_normal((T, d)).astype(np.float32) * 3


@pytest.mark.parametrize("T", [1, 3, 16])
@pytest.mark.parametrize("layout, R", [("half", 8), ("interleaved", 8), ("half", 4), (None, 0)])
@pytest.mark.parametrize("biased, bf16", [(True, True), (False, False)])
def test_fused_layer_calls_equal_their_compositions_bit_for_bit(T, layout, R, biased, bf16, many_threads):
    # What each fused call's docstring says it equals, written with the unfused compiled calls.
    rng = np.random.default_rng(T * 7 + R)
    lw, h = layer_case(rng, T, biased=biased, bf16=bf16)
    rot = rope_tables(T, R, layout, T)[0] if layout else None
    tables = (rot.cos, rot.sin_signed) if rot else (None, None)
    q, k, v = _linear.attention_inputs(h, lw["attn_norm"], 1e-5, lw["wq"], lw["bq"], lw["wk"], lw["bk"], lw["wv"],
                                       lw["bv"], 4, 2, 8, *tables, layout == "interleaved", num_threads=2)
    x = _linear.rms_norm(h, lw["attn_norm"], 1e-5)
    want_q = _linear.linear(x, lw["wq"], lw["bq"]).reshape(T, 4, 8)
    want_k = _linear.linear(x, lw["wk"], lw["bk"]).reshape(T, 2, 8)
    if rot:
        from swaref.models.rope import rotate
        want_q, want_k = rotate(want_q, rot), rotate(want_k, rot)
    assert same_bits(q, want_q) and same_bits(k, want_k)
    assert same_bits(v, _linear.linear(x, lw["wv"], lw["bv"]).reshape(T, 2, 8))
    assert q.flags.c_contiguous and k.flags.c_contiguous and v.flags.c_contiguous
    o = rng.standard_normal((T, 32)).astype(np.float32)
    h2, g, u = _linear.mlp_inputs(h, o, lw["wo"], lw["bo"], lw["mlp_norm"], 1e-5, lw["w_gate"], lw["b_gate"],
                                  lw["w_up"], lw["b_up"], num_threads=2)
    want_h2 = h + _linear.linear(o, lw["wo"], lw["bo"])
    x2 = _linear.rms_norm(want_h2, lw["mlp_norm"], 1e-5)
    assert same_bits(h2, want_h2)
    assert same_bits(g, _linear.linear(x2, lw["w_gate"], lw["b_gate"]))
    assert same_bits(u, _linear.linear(x2, lw["w_up"], lw["b_up"]))
    y = rng.standard_normal((T, 24)).astype(np.float32)
    assert same_bits(_linear.residual_linear(h2, y, lw["w_down"], lw["b_down"], 2),
                     h2 + _linear.linear(y, lw["w_down"], lw["b_down"]))
    # And against float64: each output within the dot-product bound of its own product.
    assert_within_bound(_linear.residual_linear(np.zeros_like(h2), y, lw["w_down"], lw["b_down"]), y,
                        B.widen(lw["w_down"]) if lw["w_down"].dtype == np.uint16 else lw["w_down"], lw["b_down"])


def test_fused_layer_calls_refuse_bad_arguments_naming_them():
    rng = np.random.default_rng(9)
    lw, h = layer_case(rng, 2)
    rot = rope_tables(2, 8, "half", 0)[0]
    args = (h, lw["attn_norm"], 1e-5, lw["wq"], lw["bq"], lw["wk"], lw["bk"], lw["wv"], lw["bv"], 4, 2, 8)
    with pytest.raises(SwarefError, match=r"n_heads \* head_dim = 5 \* 8") as e:
        _linear.attention_inputs(*args[:9], 5, 2, 8)
    assert e.value.kind == "shape"
    with pytest.raises(SwarefError, match="both be given"):
        _linear.attention_inputs(*args, rot.cos, None)
    with pytest.raises(SwarefError, match=r"even number R <= D = 8 of values per token, got 7"):
        _linear.attention_inputs(*args, rot.cos.reshape(2, -1)[:, :7].copy(), rot.sin_signed.reshape(2, -1)[:, :7].copy())
    with pytest.raises(SwarefTypeError, match=r"cos must be a float32 array with one row per token \(2\)"):
        _linear.attention_inputs(*args, rot.cos[:1], rot.sin_signed[:1])
    with pytest.raises(SwarefError, match="at most SMALL_T = 16 token rows"):
        _linear.attention_inputs(np.zeros((17, 40), np.float32), *args[1:])
    with pytest.raises(SwarefTypeError, match=r"w must be a float32 or bfloat16"):
        _linear.mlp_inputs(h, np.zeros((2, 32), np.float32), lw["wo"], None, lw["mlp_norm"], 1e-5,
                           lw["w_gate"].astype(np.float64), None, lw["w_up"], None)
    with pytest.raises(SwarefTypeError, match=r"h must be a float32 array of shape \(2, 40\), got float32 of shape "
                                              r"\(3, 40\)"):
        _linear.residual_linear(np.zeros((3, 40), np.float32), np.zeros((2, 24), np.float32), lw["w_down"])
    with pytest.raises(SwarefTypeError, match=r"x must be a float32 array \[T, H, D\]"):
        _linear.rope(np.zeros((2, 8), np.float32), rot.cos, rot.sin_signed, False)


@pytest.mark.parametrize("per_head", [True, False])
def test_fused_layer_calls_with_every_optional_norm_equal_their_compositions(per_head):
    # Gemma / Qwen3 / OLMo's norms: none before attention (OLMo), q/k norms over each head or over
    # the whole projection, a norm after attention and after the MLP, none before the MLP.
    rng = np.random.default_rng(11 + per_head)
    T = 3
    lw, h = layer_case(rng, T)
    rot = rope_tables(T, 8, "half", 2)[0]
    qn = rng.standard_normal(8 if per_head else 32).astype(np.float32)
    kn = rng.standard_normal(8 if per_head else 16).astype(np.float32)
    q, k, v = _linear.attention_inputs(h, None, 1e-6, lw["wq"], lw["bq"], lw["wk"], lw["bk"], lw["wv"], lw["bv"],
                                       4, 2, 8, rot.cos, rot.sin_signed, False, 2, qn, kn, per_head)
    from swaref.models.rope import rotate

    def normed(y, w, H):
        rows = y.reshape(-1, w.shape[0])
        return _linear.rms_norm(rows, w, 1e-6).reshape(T, H, 8)
    assert same_bits(q, rotate(normed(_linear.linear(h, lw["wq"], lw["bq"]), qn, 4), rot))
    assert same_bits(k, rotate(normed(_linear.linear(h, lw["wk"], lw["bk"]), kn, 2), rot))
    assert same_bits(v, _linear.linear(h, lw["wv"], lw["bv"]).reshape(T, 2, 8))
    o = rng.standard_normal((T, 32)).astype(np.float32)
    on = rng.standard_normal(40).astype(np.float32)
    h2, g, u = _linear.mlp_inputs(h, o, lw["wo"], lw["bo"], None, 1e-6, lw["w_gate"], lw["b_gate"], lw["w_up"],
                                  lw["b_up"], 2, on)
    want_h2 = h + _linear.rms_norm(_linear.linear(o, lw["wo"], lw["bo"]), on, 1e-6)
    assert same_bits(h2, want_h2)
    assert same_bits(g, _linear.linear(want_h2, lw["w_gate"], lw["b_gate"]))
    assert same_bits(u, _linear.linear(want_h2, lw["w_up"], lw["b_up"]))
    y = rng.standard_normal((T, 24)).astype(np.float32)
    assert same_bits(_linear.residual_linear(h2, y, lw["w_down"], lw["b_down"], 2, on, 1e-6),
                     h2 + _linear.rms_norm(_linear.linear(y, lw["w_down"], lw["b_down"]), on, 1e-6))
    # The norms are applied: without them, other bits; a wrong-sized weight is refused by name.
    assert not same_bits(_linear.residual_linear(h2, y, lw["w_down"], lw["b_down"], 2), h2 + _linear.rms_norm(
        _linear.linear(y, lw["w_down"], lw["b_down"]), on, 1e-6))
    with pytest.raises(SwarefTypeError, match=r"q_norm must be a C-contiguous float32 array of shape \((8|32),\)"):
        _linear.attention_inputs(h, None, 1e-6, lw["wq"], lw["bq"], lw["wk"], lw["bk"], lw["wv"], lw["bv"],
                                 4, 2, 8, None, None, False, 2, qn[:-1].copy(), kn, per_head)
    with pytest.raises(SwarefError, match="eps must be given with out_norm"):
        _linear.residual_linear(h2, y, lw["w_down"], lw["b_down"], 2, on)
    # No output row: nothing to normalise (no division by a zero row length).
    assert _linear.residual_linear(np.zeros((T, 0), np.float32), y, np.zeros((0, 24), np.float32), None, 1,
                                   np.zeros(0, np.float32), 1e-6).shape == (T, 0)
    with pytest.raises(SwarefError, match="q_norm and k_norm must both be given"):
        _linear.attention_inputs(h, None, 1e-6, lw["wq"], lw["bq"], lw["wk"], lw["bk"], lw["wv"], lw["bv"],
                                 4, 2, 8, None, None, False, 2, qn, None, per_head)
