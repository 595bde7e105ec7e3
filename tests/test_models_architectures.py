"""swaref.models.architectures: the declared families and formats are consistent with ModelConfig and loadable."""
import dataclasses

import numpy as np
import pytest

from model_helpers import hf_config, make_model, oracle_logits
from oracle import assert_close

from swaref import models as M
from swaref.models.architectures import ARCHITECTURES, BIASED, FORMATS, ROPE_LAYOUTS, WINDOW_RULES
from swaref.models.checkpoint import CheckpointError, config_from_dict
from swaref.models.config import ModelConfig


def test_every_format_maps_only_config_fields_and_names_its_layout():
    config_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    for fmt in FORMATS.values():
        assert set(fmt.fields) <= config_fields and set(fmt.required) <= set(fmt.fields), fmt.name
        assert set(fmt.defaults) <= set(fmt.fields) and fmt.rope_layout in ROPE_LAYOUTS
        assert len(set(fmt.fields.values())) == len(fmt.fields), f"{fmt.name}: two fields read one file field"


@pytest.mark.parametrize("arch", list(ARCHITECTURES.values()), ids=list(ARCHITECTURES))
def test_every_row_is_well_formed(arch):
    assert arch.windows in WINDOW_RULES and arch.graph.get("qk_norm", "") in ("", "head", "all")
    assert set(arch.graph) <= {f.name for f in dataclasses.fields(ModelConfig)}
    assert set(arch.keys) <= {f.name for f in dataclasses.fields(ModelConfig)}
    assert set(arch.biases) <= set(BIASED) and all(set(p) <= set(BIASED) for p in arch.bias_keys.values())
    assert arch.with_layer_types in (None, *ARCHITECTURES)
    # Every config.json key a file field maps to has a default (what transformers' config class gives).
    assert {"vocab_size", "hidden_size", "num_hidden_layers", "sliding_window", "rope_theta"} <= set(arch.defaults)


# Two layers, sliding_window 4 in the file: which layers slide under each family's rule.
WINDOWS = {"mistral": (4, 4), "ministral": (4, 4), "llama": (None, None), "qwen2": (None, None),
           "qwen3": (None, None), "starcoder2": (4, 4), "phi3": (4, 4), "mixtral": (4, 4), "gemma3_text": (4, 4),
           "cohere2": (4, 4), "olmo3": (4, 4), "gemma2": (4, None), "gpt_oss": (4, None)}


@pytest.mark.parametrize("arch", list(ARCHITECTURES.values()), ids=list(ARCHITECTURES))
def test_every_architecture_is_recognised_by_class_or_model_type(arch):
    base = hf_config(make_model(window=4).config)
    base.pop("rope_parameters")  # Gemma 3 and OLMo 3 nest them by layer type; every family has defaults
    if arch.windows == "none":
        base["sliding_window"] = None  # Llama refuses a window (tests/test_models_hfconfig.py)
    for names in ({"architectures": [arch.hf_classes[0]], "model_type": None},
                  {"architectures": None, "model_type": arch.name}):
        cfg = config_from_dict(dict(base, **names))
        assert cfg.windows == WINDOWS[arch.name] and cfg.arch == arch.name
        assert cfg.qk_norm == arch.graph.get("qk_norm", "")
        # The always-biased projections, and those of every bias key whose class default is true.
        on = {p for key, ps in arch.bias_keys.items() if arch.defaults.get(key) is True for p in ps}
        assert set(cfg.biases) == set(arch.biases) | on
    act_key = arch.keys.get("act", "hidden_act")
    if act_key in arch.ignored:  # gpt-oss's experts never read hidden_act: any value means the same model
        assert config_from_dict(dict(base, model_type=arch.name, **{act_key: "gelu"})).act == "silu"
        return
    with pytest.raises(CheckpointError, match=f"{act_key} 'gelu' is not supported"):
        config_from_dict(dict(base, model_type=arch.name, **{act_key: "gelu"}))


def test_model_type_wins_over_the_class_name_as_in_auto_model():
    base = hf_config(make_model(window=4).config)
    assert config_from_dict(dict(base, model_type="llama", sliding_window=None)).windows == (None, None)
    with pytest.raises(CheckpointError, match="unsupported architecture"):
        config_from_dict(dict(base, model_type="gpt2"))


# A config.json per family with its distinctive keys (plain RoPE, which the dense oracle implements;
# scaled RoPE is held to transformers' rotary embeddings in tests/test_crosscheck_rope.py).
FAMILY_CONFIGS = {
    "mistral": {}, "ministral": dict(layer_types=["full_attention", "sliding_attention"]),
    "llama": dict(sliding_window=None, attention_bias=True, mlp_bias=True),
    "qwen2": dict(use_sliding_window=True, max_window_layers=1),
    "qwen3": dict(use_sliding_window=True, max_window_layers=0, attention_bias=True),
    "starcoder2": dict(hidden_act="gelu_pytorch_tanh"), "phi3": dict(partial_rotary_factor=0.5),
    "mixtral": dict(num_local_experts=4, num_experts_per_tok=2),
    "gemma3_text": dict(rope_parameters=None, sliding_window_pattern=2, query_pre_attn_scalar=12),
    "cohere2": dict(rope_parameters=None, sliding_window_pattern=2, logit_scale=0.5),
    "olmo3": dict(rope_parameters=None),
    "gemma2": dict(query_pre_attn_scalar=12, attn_logit_softcapping=3.0, final_logit_softcapping=4.0),
    "gpt_oss": dict(num_local_experts=4, num_experts_per_tok=2, swiglu_limit=2.0),
}


@pytest.mark.parametrize("name", list(ARCHITECTURES))
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_every_family_read_from_a_config_json_matches_the_dense_oracle(name, dtype):
    # bfloat16: every matrix (stacked expert biases included) held as bfloat16 bits; the oracle
    # widens them, so both must compute with the same values.  Both backends, chunks of 3 then
    # decode steps of 1 (the compiled backend's fused decode layer, where the family has it).
    raw = {k: v for k, v in hf_config(make_model(window=4).config, name, **FAMILY_CONFIGS[name]).items()
           if v is not None or k == "sliding_window"}
    model = M.random_model(config_from_dict(raw), seed=5, scale=1.5, dtype=dtype)
    toks = np.random.default_rng(1).integers(0, 61, 11)
    want = oracle_logits(model, toks)
    for backend in ("reference", "cython"):
        caches = M.new_caches(model, 11)
        got = M.prefill_prompt(model, toks[:7], caches, chunk_size=3, logits="all", backend=backend)
        steps = [M.forward(model, [t], caches, backend=backend) for t in toks[7:]]
        assert_close(np.concatenate([got] + steps), want, atol=1e-4, name=f"{name} {dtype} {backend}")
