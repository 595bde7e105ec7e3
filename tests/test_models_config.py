"""swaref.models.config: ModelConfig validates every field in one place, with sanity limits."""
import dataclasses

import numpy as np
import pytest

from model_helpers import make_cfg

from swaref.errors import SwarefError
from swaref.models.config import LIMITS, ConfigFieldError, ModelConfig


@pytest.mark.parametrize("kw,match", [
    (dict(n_heads=3), "multiple of n_kv_heads"), (dict(head_dim=7), "even"), (dict(vocab=0), "vocab_size"),
    (dict(window=[4]), "2 entries"), (dict(window=0), "window"), (dict(layout="complex"), "rope_layout"),
    (dict(eos=(61,)), "eos_token_ids")])
def test_bad_config_is_rejected(kw, match):
    with pytest.raises(SwarefError, match=match):
        make_cfg(**kw)


def test_defaults_and_normalisation():
    cfg = ModelConfig(vocab_size=10, hidden_size=32, intermediate_size=8, n_layers=3, n_heads=4,
                      windows=np.int64(5), eos_token_ids=np.int32(2))
    assert (cfg.n_kv_heads, cfg.head_dim, cfg.windows, cfg.eos_token_ids) == (4, 8, (5, 5, 5), (2,))
    assert type(cfg.windows[0]) is int and type(cfg.eos_token_ids[0]) is int
    assert (cfg.q_dim, cfg.kv_dim) == (32, 32)
    assert ModelConfig(vocab_size=10, hidden_size=32, intermediate_size=8, n_layers=2, n_heads=4,
                       windows=[None, 3]).windows == (None, 3)


def test_the_config_is_frozen_and_replace_validates_again():
    cfg = make_cfg()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.n_layers = 3
    assert dataclasses.replace(cfg, rope_theta=1e6).rope_theta == 1e6
    with pytest.raises(SwarefError, match="head_dim must be even"):
        dataclasses.replace(cfg, head_dim=7)


@pytest.mark.parametrize("field,value", [("n_layers", 10 ** 9), ("vocab_size", 10 ** 12), ("hidden_size", 1 << 17),
                                         ("intermediate_size", 10 ** 10), ("n_heads", 10 ** 6),
                                         ("head_dim", 10 ** 8), ("n_kv_heads", 0), ("n_layers", True),
                                         ("n_layers", 2.0)])
def test_sizes_out_of_their_sanity_limits_are_refused_before_anything_is_built(field, value):
    kw = dict(vocab_size=10, hidden_size=32, intermediate_size=8, n_layers=2, n_heads=4, windows=4)
    kw[field] = value
    with pytest.raises(ConfigFieldError, match=f"config field {field} must be an int in \\[1, {LIMITS[field]}\\], "
                                               f"got {value!r}") as e:
        ModelConfig(**kw)
    assert e.value.field == field and e.value.kind == "argument"


def test_a_field_error_can_be_worded_with_a_file_s_names():
    with pytest.raises(ConfigFieldError) as e:
        make_cfg(n_heads=4, n_kv=3)
    assert e.value.kind == "heads"
    assert e.value.describe({"n_heads": "num_attention_heads", "n_kv_heads": "num_key_value_heads"}) == \
        "config field num_attention_heads must be a multiple of num_key_value_heads (3), got 4"


def test_head_dim_must_be_given_when_the_hidden_size_does_not_divide():
    with pytest.raises(SwarefError, match="head_dim must be given when hidden_size is not a multiple of n_heads"):
        ModelConfig(vocab_size=10, hidden_size=30, intermediate_size=8, n_layers=1, n_heads=4)
    assert ModelConfig(vocab_size=10, hidden_size=30, intermediate_size=8, n_layers=1, n_heads=4,
                       head_dim=6).head_dim == 6


@pytest.mark.parametrize("kw,match", [
    (dict(norm="batch"), "norm must be one of"), (dict(mlp="moe"), "n_experts must be an int"),
    (dict(mlp="moe", n_experts=2, top_k=3), "top_k must be at most n_experts \\(2\\), got 3"),
    (dict(norms=("attn", "pre")), "norms must be a list among"), (dict(qk_norm="both"), "qk_norm"),
    (dict(act="relu"), "act must be one of"), (dict(parallel=1), "parallel must be true or false"),
    (dict(rope_dim=5), "rope_dim must be an even int in \\[2, head_dim = 8\\]"),
    (dict(rope_scaling={"rope_type": "ntk"}), "rope_scaling must be empty or with a rope_type"),
    (dict(rope_scaling={"rope_type": "yarn", "factor": 2.0}), "yarn with 'original_max_position_embeddings'"),
    (dict(rope_scaling={"rope_type": "linear", "factor": 2.0, "beta": 1}), "linear parameters among"),
    (dict(embed_scale=0.0), "embed_scale must be a finite number > 0"),
    (dict(biases=("wq", "w_in")), "biases must be a list of projections"),
    (dict(sampling_defaults={"top_p": 0.0}), "sampling_defaults"),
    (dict(local_rope_theta=-1.0), "local_rope_theta must be a finite number > 0")])
def test_the_graph_fields_are_validated(kw, match):
    with pytest.raises(ConfigFieldError, match=match):
        make_cfg(**kw)


def test_each_layer_s_rope():
    cfg = make_cfg(window=[3, None], local_rope_theta=100.0, rope_scaling={"rope_type": "linear", "factor": 2.0})
    assert cfg.layer_rope(0) == (100.0, ())
    assert cfg.layer_rope(1) == (10000.0, (("factor", 2.0), ("rope_type", "linear")))
    assert make_cfg(window=[3, None], nope_full=True).layer_rope(1) is None
    assert make_cfg(rope_dim=8).rope_dim is None  # the whole head is the default
