"""swaref's reading of config.json against transformers 5.24.0's own classes (the `crosscheck` extra).

* the defaults table of every supported model_type (architectures.ARCHITECTURES[...].defaults) equals
  what transformers' config class makes of a config that omits the key;
* for a grid of window-related keys (sliding_window absent / null / set, use_sliding_window,
  max_window_layers, layer_types), the per-layer windows swaref derives equal those of the
  model AutoModelForCausalLM builds from the same config.json, read from its attention modules.
"""
import json

import pytest

from crosscheck_helpers import require_extra

pytestmark = pytest.mark.crosscheck

require_extra()
import torch  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402
from transformers.models.auto.configuration_auto import CONFIG_MAPPING  # noqa: E402

from swaref.models.architectures import ARCHITECTURES  # noqa: E402
from swaref.models.hfconfig import CheckpointError, config_from_dict  # noqa: E402


def _theta(cfg):
    params = cfg.rope_parameters  # nested by layer type for Gemma 3 / OLMo 3: the full layers' theta
    return params["full_attention"]["rope_theta"] if "full_attention" in params else params["rope_theta"]


def _their_value(cls, theirs, key, arch):
    if key == "rope_theta":
        return _theta(theirs)
    if key == "rope_parameters":  # the scaling a family fills in without one (gpt-oss); its theta is rope_theta's
        return {k: v for k, v in theirs.rope_parameters.items() if k != "rope_theta"}
    if key == "partial_rotary_factor":
        return theirs.rope_parameters.get("partial_rotary_factor", 1.0)
    if key == arch.full_every_key:  # popped from the kwargs: read back from the layer types it made
        return next(i + 1 for i, t in enumerate(theirs.layer_types) if t == "full_attention")
    return getattr(theirs, key)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_the_defaults_table_is_transformers_config_class(name):
    cls = CONFIG_MAPPING[name]
    arch = ARCHITECTURES[name]
    theirs = cls()
    for key, value in arch.defaults.items():
        if value is None and not hasattr(theirs, key):
            continue  # a key the class does not declare (Llama's sliding_window, Qwen2's head_dim): never set
        got = _their_value(cls, theirs, key, arch)
        if key == "head_dim" and value is None:
            assert got in (None, theirs.hidden_size // theirs.num_attention_heads)  # None: hidden_size // heads
            continue
        if key == "num_key_value_heads" and value is None:
            value = theirs.num_attention_heads
        if key == "layer_types" and value is None:
            continue  # derived by __post_init__; compared through the window rules below
        if key == "sliding_window" and name in ("qwen2", "qwen3"):
            got = cls(use_sliding_window=True).sliding_window  # __post_init__ nulls it unless enabled
        assert got == value, f"{name}.{key}: transformers {got!r}, swaref {value!r}"


BASE = dict(vocab_size=64, hidden_size=16, intermediate_size=16, num_hidden_layers=4, num_attention_heads=2,
            num_key_value_heads=1, head_dim=8, bos_token_id=1, eos_token_id=2, pad_token_id=0)
GRID = [{}, {"sliding_window": None}, {"sliding_window": 5}, {"sliding_window": 5, "use_sliding_window": False},
        {"sliding_window": 5, "use_sliding_window": True},
        {"sliding_window": 5, "use_sliding_window": True, "max_window_layers": 2},
        {"sliding_window": 5, "use_sliding_window": True, "max_window_layers": 0},
        {"sliding_window": 5, "layer_types": ["sliding_attention", "full_attention"] * 2},
        {"sliding_window": 5, "use_sliding_window": True,
         "layer_types": ["full_attention", "sliding_attention"] * 2},
        {"layer_types": ["full_attention", "sliding_attention"] * 2}]


def _their_windows(d):
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(d))
    cfg = model.config
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3]]))  # a config transformers builds but cannot run raises here
    out = []
    for layer in model.model.layers:
        w = getattr(layer.self_attn, "sliding_window", getattr(cfg, "sliding_window", None))
        if type(model).__name__ == "LlamaForCausalLM":
            w = None  # LlamaAttention and LlamaModel's causal mask never read sliding_window
        out.append(w)
    return tuple(out)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_per_layer_windows_are_those_of_the_model_auto_model_builds(name, tmp_path):
    for i, extra in enumerate(GRID):
        raw = dict(BASE, model_type=name, architectures=[ARCHITECTURES[name].hf_classes[0]], **extra)
        d = tmp_path / str(i)
        d.mkdir()
        (d / "config.json").write_text(json.dumps(raw))
        if name == "llama" and ("layer_types" in extra or extra.get("sliding_window")):
            # LlamaModel's mask ignores them, its DynamicCache does not: refused (docs/model.md), and
            # transformers' own forward pass and generate disagree (the test below).
            with pytest.raises(CheckpointError, match="but llama has no sliding window"):
                config_from_dict(raw)
            continue
        try:
            want = _their_windows(str(d))
        except (ValueError, TypeError) as e:  # transformers cannot run it either (sliding layers without a window)
            with pytest.raises(CheckpointError):
                config_from_dict(raw)
            print(name, extra, "refused by both:", e)
            continue
        assert config_from_dict(raw).windows == want, (name, extra)


def _random_model(d, raw, seed):
    """A random transformers model for config.json ``raw`` (written to d), weights large enough to matter."""
    (d / "config.json").write_text(json.dumps(raw))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(d))).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape) * (1.0 if p.ndim == 1 else 2.0 / p.shape[-1] ** 0.5))
    return model


def test_transformers_llama_forward_and_generate_disagree_with_a_sliding_window(tmp_path):
    """Why swaref refuses a Llama config with sliding_window: transformers' full-sequence forward ignores
    it while generate's DynamicCache keeps sliding_window - 1 tokens, so their greedy tokens part."""
    model = _random_model(tmp_path, dict(BASE, model_type="llama", num_hidden_layers=2, sliding_window=3), 0)
    with torch.no_grad():
        prompt = torch.randint(3, 64, (1, 12))
        out = model.generate(prompt, max_new_tokens=12, min_new_tokens=12, do_sample=False)
        rescored = model(out).logits[0, prompt.shape[1] - 1: -1].argmax(-1)
    assert out[0, prompt.shape[1]:].tolist() != rescored.tolist()


def test_generation_config_stop_ids_stop_both_at_the_same_token(tmp_path):
    """Issue 11's fourth divergence against transformers itself: eos ids listed only in
    generation_config.json stop transformers' generate, and swaref's, after the same 4 tokens."""
    from swaref import models as M
    raw = dict(BASE, model_type="mistral", architectures=["MistralForCausalLM"], num_hidden_layers=2,
               sliding_window=4, eos_token_id=None)
    _random_model(tmp_path, raw, 1).save_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(raw))  # no eos in config.json
    prompt = [5, 17, 3, 40, 22]
    free = M.generate(M.load_model(str(tmp_path)), [prompt], max_new_tokens=12).tokens[0]
    stop = free[3]
    assert stop not in free[:3], "pick a prompt whose 4th greedy token is new"
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [stop, 63]}))
    ours = M.generate(M.load_model(str(tmp_path)), [prompt], max_new_tokens=12)
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path), attn_implementation="eager").eval()
    with torch.no_grad():
        theirs = hf.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False)[0, len(prompt):].tolist()
    assert ours.tokens[0] == theirs == free[:4] and ours.finished_by_eos == [True]
