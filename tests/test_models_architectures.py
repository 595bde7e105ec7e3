"""swaref.models.architectures: the declared families and formats are consistent with ModelConfig and loadable."""
import dataclasses

import pytest

from model_helpers import hf_config, make_model

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
           "cohere2": (4, 4), "olmo3": (4, 4)}


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
        assert set(cfg.biases) == set(arch.biases) | set(arch.bias_keys.get("use_bias", ()))
    act_key = arch.keys.get("act", "hidden_act")
    with pytest.raises(CheckpointError, match=f"{act_key} 'gelu' is not supported"):
        config_from_dict(dict(base, model_type=arch.name, **{act_key: "gelu"}))


def test_model_type_wins_over_the_class_name_as_in_auto_model():
    base = hf_config(make_model(window=4).config)
    assert config_from_dict(dict(base, model_type="llama", sliding_window=None)).windows == (None, None)
    with pytest.raises(CheckpointError, match="unsupported architecture"):
        config_from_dict(dict(base, model_type="gpt2"))
