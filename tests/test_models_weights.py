"""swaref.models.weights: the one declaration of every tensor (shape, file names) and the checks on a Model."""
import os

import numpy as np
import pytest

from model_helpers import HF_LAYER, HF_OPTIONAL, MISTRAL_LAYER, assert_packed, make_cfg, make_model, present

from swaref import models as M
from swaref.errors import SwarefError
from swaref.models.bf16 import to_bfloat16, widen
from swaref.models.weights import expected_shapes, model_as, pack_weights, tensor_names


def test_the_declared_names_and_shapes_match_an_independent_table():
    # HF_LAYER / MISTRAL_LAYER are spelled out in the tests from transformers' and mistral-inference's names.
    top, layer = tensor_names("hf")
    assert layer == dict({k: v + ".weight" for k, v in HF_LAYER.items()}, **HF_OPTIONAL)
    assert tensor_names("mistral")[1] == {k: v + ".weight" for k, v in MISTRAL_LAYER.items()}
    assert top == {"embed": "model.embed_tokens.weight", "final_norm": "model.norm.weight",
                   "lm_head": "lm_head.weight", "final_norm_b": "model.norm.bias"}
    d, i, hq, hkv, D, V = 32, 48, 4, 2, 8, 61
    assert expected_shapes(make_cfg()) == (
        {"embed": (V, d), "final_norm": (d,), "lm_head": (V, d)},
        {"attn_norm": (d,), "wq": (hq * D, d), "wk": (hkv * D, d), "wv": (hkv * D, d), "wo": (d, hq * D),
         "mlp_norm": (d,), "w_gate": (i, d), "w_up": (i, d), "w_down": (d, i)})
    # Optional tensors appear only when the config has them.
    _, layer = expected_shapes(make_cfg(biases=("wq", "wk", "wv", "wo", "w_up"), qk_norm="head"))
    assert {k: layer[k] for k in layer if k in HF_OPTIONAL} == {
        "bq": (hq * D,), "bk": (hkv * D,), "bv": (hkv * D,), "bo": (d,), "b_up": (i,), "q_norm": (D,), "k_norm": (D,)}


def test_n_params_counts_every_weight_once():
    d, i, q, kv, V = 32, 48, 32, 16, 61
    per_layer = 2 * d + 2 * q * d + 2 * kv * d + 3 * i * d
    assert make_model().n_params == 2 * V * d + d + 2 * per_layer
    assert make_model(tie=True).n_params == V * d + d + 2 * per_layer
    assert make_model(biases=("wq", "wk", "wv"), qk_norm="head").n_params == 2 * V * d + d + 2 * (
        per_layer + q + 2 * kv + 2 * 8)


def test_a_tensor_the_config_does_not_have_is_refused():
    m = make_model(biases=("wq",))
    assert m.layers[0].bq is not None and m.layers[0].bk is None
    arrays = dict(present(m.layers[0]), bk=np.zeros(16, np.float32))
    with pytest.raises(SwarefError, match=r"layers\[0\].bk must be None: the config has no such tensor"):
        M.Model(m.config, m.embed, [M.LayerWeights(**arrays), m.layers[1]], m.final_norm, m.lm_head)


def test_a_model_with_a_wrong_weight_is_refused_naming_it():
    m = make_model()
    arrays = present(m.layers[1])
    with pytest.raises(SwarefError, match=r"layers\[1\].wk must have shape \(16, 32\), got \(16, 31\)"):
        M.Model(m.config, m.embed, [m.layers[0], M.LayerWeights(**dict(arrays, wk=np.zeros((16, 31), np.float32)))],
                m.final_norm, m.lm_head)
    with pytest.raises(SwarefError, match="weight lm_head must be a float32 numpy array, got float64 array"):
        M.Model(m.config, m.embed, m.layers, m.final_norm, m.lm_head.astype(np.float64))
    with pytest.raises(SwarefError, match="model needs 2 layers, got 1"):
        M.Model(m.config, m.embed, m.layers[:1], m.final_norm, m.lm_head)


# Where the matrices live (weights.arena_views): one buffer, in the order a decode step reads them.
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("kw", [dict(), dict(tie=True), dict(biases=("wq", "w_up"), qk_norm="head")])
def test_random_model_and_model_as_pack_every_matrix_in_read_order(dtype, kw):
    model = M.random_model(make_cfg(n_layers=3, **kw), seed=4, dtype=dtype)
    assert assert_packed(model) == 1 + 3 * 7 + (0 if kw.get("tie") else 1)
    other = model_as(model, "float32" if dtype == "bfloat16" else "bfloat16")
    assert_packed(other)
    back = model_as(other, dtype) if dtype == "float32" else None
    if back is not None:   # float32 -> bfloat16 -> float32 is the rounding alone, checked against bf16.py's
        for a, b in zip(_matrices(back), _matrices(model)):
            assert np.array_equal(a, widen(to_bfloat16(b)))


def test_pack_weights_keeps_every_value_and_array_it_does_not_move():
    cfg = make_cfg(biases=("wq",), qk_norm="head")
    rng = np.random.default_rng(0)
    top, layer = expected_shapes(cfg)
    arr = lambda shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    layers = [M.LayerWeights(**{n: arr(s) for n, s in layer.items()}) for _ in range(cfg.n_layers)]
    hand = M.Model(cfg, arr(top["embed"]), layers, arr(top["final_norm"]), arr(top["lm_head"]))
    with pytest.raises(AssertionError, match="not 2 MiB-aligned|expected right after"):
        assert_packed(hand)           # the check can fail: separate allocations are not one arena
    packed = pack_weights(hand)
    assert_packed(packed)
    assert [a.tobytes() for a in _matrices(packed)] == [a.tobytes() for a in _matrices(hand)]
    assert packed.final_norm is hand.final_norm and packed.layers[1].bq is hand.layers[1].bq   # vectors stay
    assert not any(np.shares_memory(a, b) for a, b in zip(_matrices(packed), _matrices(hand)))


def test_the_arena_is_advised_huge_pages_where_linux_offers_them():
    # NumPy advises huge pages (MADV_HUGEPAGE) for allocations of 4 MiB and more on Linux; the arena is
    # one such allocation, so the kernel marks its whole mapping eligible.
    thp = "/sys/kernel/mm/transparent_hugepage/enabled"
    if not os.path.exists("/proc/self/smaps") or not os.path.exists(thp) or "[never]" in open(thp).read():
        pytest.skip("no transparent huge pages here (not Linux, or THP disabled)")
    model = M.random_model(make_cfg(vocab=40000, hidden=64), seed=0)   # a 10 MiB embedding: over 4 MiB
    at = model.embed.ctypes.data
    eligible = None
    for line in open("/proc/self/smaps"):
        head = line.split()[0]
        if "-" in head and ":" not in head:
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= at < hi
        elif inside and line.startswith("THPeligible:"):
            eligible = line.split()[1]
    assert eligible == "1", f"the arena's mapping is not eligible for huge pages: THPeligible {eligible}"


def _matrices(model):
    return [model.embed, model.lm_head] + [a for lw in model.layers for a in present(lw).values() if a.ndim >= 2]
