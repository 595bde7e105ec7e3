"""swaref.models.weights: the one declaration of every tensor (shape, file names) and the checks on a Model."""
import numpy as np
import pytest

from model_helpers import HF_LAYER, HF_OPTIONAL, MISTRAL_LAYER, make_cfg, make_model, present

from swaref import models as M
from swaref.errors import SwarefError
from swaref.models.weights import expected_shapes, tensor_names


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
