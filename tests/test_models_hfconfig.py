"""swaref.models.hfconfig: a config.json means what transformers 5.24.0 makes of it (issue 11, section 1).

Each of the four divergences found with checkpoints written by transformers is
a test here that failed before the fix; tests/test_crosscheck_config.py holds
the defaults table and the window rules to transformers' own classes.
"""
import json
import os

import numpy as np
import pytest

from model_helpers import hf_config, make_model, needs_safetensors, write_checkpoint

from swaref import models as M
from swaref.models.hfconfig import CheckpointError, config_from_dict


def _cfg(model_type="mistral", drop=(), **extra):
    raw = hf_config(make_model(window=4).config, model_type, **extra)
    for key in drop:
        raw.pop(key)
    return config_from_dict(raw)


def test_a_mistral_config_without_sliding_window_slides_with_4096():
    # MistralConfig.sliding_window defaults to 4096; swaref used to run full attention.
    assert _cfg(drop=["sliding_window"]).windows == (4096, 4096)
    assert _cfg(sliding_window=None).windows == (None, None)  # an explicit null is full attention


@needs_safetensors
def test_the_4096_default_changes_the_logits_of_a_4160_token_prompt(tmp_path):
    # The loaded model computes what the same weights with W = 4096 compute (swaref's windowed path is
    # held to the dense oracle and to transformers elsewhere), and full attention differs after 4096.
    model = make_model(seed=4, window=4096, n_layers=1, hidden=16, n_heads=2, n_kv=1, head_dim=8, inter=16)
    raw = hf_config(model.config)
    raw.pop("sliding_window")
    loaded = M.load_model(write_checkpoint(str(tmp_path), model, raw))
    ids = np.random.default_rng(0).integers(0, 61, 4160)

    def run(m):
        return M.prefill_prompt(m, ids, M.new_caches(m, 4160), chunk_size=2080, logits="all")
    want = run(model)
    assert np.array_equal(run(loaded), want)
    full = M.Model(M.ModelConfig(**dict(vars(model.config), windows=None)), model.embed, model.layers,
                   model.final_norm, model.lm_head)
    diff = np.abs(run(full) - want)
    assert diff[:4096].max() == 0 and diff[4096:].max() > 1e-2, "control: full attention must differ after 4096"


def test_mistral_ignores_use_sliding_window_false():
    # MistralAttention passes config.sliding_window to every layer; use_sliding_window is never read.
    assert _cfg(use_sliding_window=False, sliding_window=5).windows == (5, 5)


@pytest.mark.parametrize("model_type,want", [("mistral", 8), ("ministral", 8), ("llama", 4), ("qwen2", 32),
                                             ("qwen3", 32)])
def test_a_missing_num_key_value_heads_is_the_config_class_default(model_type, want):
    raw = hf_config(make_model(window=4, n_heads=32, n_kv=8, head_dim=2, hidden=64).config, model_type,
                    num_attention_heads=4 if model_type == "llama" else 32)
    raw.pop("num_key_value_heads")
    assert config_from_dict(raw).n_kv_heads == want


@needs_safetensors
def test_end_of_sequence_ids_listed_only_in_generation_config_stop_generation(tmp_path):
    model = make_model(seed=5, window=4)
    want = M.generate(model, [[3, 4, 5]], max_new_tokens=12, stop_on_eos=False).tokens[0]
    raw = hf_config(model.config)
    raw.pop("eos_token_id")  # MistralConfig's default would be 2; the generation config lists the real ones
    d = write_checkpoint(str(tmp_path), model, raw)
    with open(os.path.join(d, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": [want[3], 60], "do_sample": True, "temperature": 0.6, "top_p": 0.9}, f)
    loaded = M.load_model(d)
    assert loaded.config.eos_token_ids == (want[3], 60)
    res = M.generate(loaded, [[3, 4, 5]], max_new_tokens=12)
    assert res.tokens[0] == want[:4] and res.finished_by_eos == [True]
    # The sampling defaults transformers' generate would use: the file's, then GenerationConfig's fallbacks.
    assert loaded.config.sampling == {"do_sample": True, "temperature": 0.6, "top_p": 0.9, "top_k": 50}


@needs_safetensors
def test_without_generation_config_the_stop_ids_are_config_json_s_and_sampling_is_greedy(tmp_path):
    model = make_model(seed=5, window=4)
    loaded = M.load_model(write_checkpoint(str(tmp_path), model))
    assert loaded.config.eos_token_ids == (2,)
    assert loaded.config.sampling == {"do_sample": False, "temperature": 1.0, "top_p": 1.0, "top_k": 50}


@pytest.mark.parametrize("gen,match", [({"eos_token_id": "x"}, "generation_config.json: config field eos_token_id"),
                                       ({"top_p": 2.0}, "sampling_defaults"), ([1], "expected a JSON object")])
@needs_safetensors
def test_a_bad_generation_config_is_refused_naming_the_file(tmp_path, gen, match):
    d = write_checkpoint(str(tmp_path), make_model(window=4))
    with open(os.path.join(d, "generation_config.json"), "w") as f:
        json.dump(gen, f)
    with pytest.raises(CheckpointError, match=match) as e:
        M.load_model(d)
    assert e.value.kind == "checkpoint"


def test_a_mistral_config_with_layer_types_is_ministral_as_auto_model_loads_it():
    assert _cfg(layer_types=["full_attention", "sliding_attention"]).windows == (None, 4)
    assert _cfg(layer_types=None).windows == (4, 4)  # MinistralConfig: every layer slides
    assert _cfg(layer_types=["attention", "sliding_attention"]).windows == (None, 4)  # legacy name


@pytest.mark.parametrize("extra,want", [
    ({}, (None, None)),                                                            # use_sliding_window false
    ({"use_sliding_window": True, "max_window_layers": 1}, (None, 4)),              # layers >= 1 slide
    ({"use_sliding_window": True, "max_window_layers": 0}, (4, 4)),
    ({"use_sliding_window": True}, (None, None)),                                   # max_window_layers 28
    ({"use_sliding_window": True, "layer_types": ["sliding_attention", "full_attention"]}, (4, None)),
])
@pytest.mark.parametrize("model_type", ["qwen2", "qwen3"])
def test_qwen_windows_follow_transformers_code(model_type, extra, want):
    assert _cfg(model_type, **extra).windows == want


def test_qwen_sliding_layer_types_without_use_sliding_window_are_refused():
    with pytest.raises(CheckpointError, match=r"layer_types\[0\] is 'sliding_attention' but sliding_window is null "
                                              r"\(use_sliding_window is false\)"):
        _cfg("qwen2", layer_types=["sliding_attention", "full_attention"])


def test_features_follow_the_model_type():
    assert _cfg("qwen2").biases == ("wq", "wk", "wv")
    assert _cfg("qwen3").qk_norm == "head" and _cfg("qwen3").biases == ()
    assert _cfg("qwen3", attention_bias=True).biases == ("wq", "wk", "wv", "wo")
    assert _cfg("llama", mlp_bias=True).biases == ("w_gate", "w_up", "w_down")
    # Qwen3's head_dim defaults to 128, not hidden / heads.
    assert _cfg("qwen3", drop=["head_dim"]).head_dim == 128 and _cfg("qwen2", drop=["head_dim"]).head_dim == 8
    with pytest.raises(CheckpointError, match="field 'attention_bias' must be true or false, got 'yes'"):
        _cfg("qwen3", attention_bias="yes")


@pytest.mark.parametrize("key,value,match", [
    ("rope_parameters", {"rope_type": "longrope", "rope_theta": 1e4}, "rope_type 'longrope' is not supported"),
    ("rope_scaling", {"type": "dynamic", "factor": 2.0}, "rope_type 'dynamic' is not supported"),
    ("layer_types", ["chunked_attention", "full_attention"], "layer_types\\[0\\] = 'chunked_attention'"),
    ("hidden_act", "gelu", "hidden_act 'gelu'")])
def test_keys_that_would_change_the_computation_are_refused_by_name(key, value, match):
    with pytest.raises(CheckpointError, match=match) as e:
        _cfg("ministral", **{key: value})
    assert e.value.kind == "checkpoint"


def test_rope_theta_comes_from_rope_parameters_then_the_top_level_key_then_the_class_default():
    assert _cfg(rope_parameters={"rope_type": "default", "rope_theta": 5e5}, rope_theta=7.0).rope_theta == 5e5
    assert _cfg(drop=["rope_parameters"], rope_theta=7.0).rope_theta == 7.0
    assert _cfg(drop=["rope_parameters"]).rope_theta == 10000.0


def test_ministral_without_head_dim_is_refused_as_transformers_cannot_build_it():
    # MinistralConfig.head_dim defaults to None and MinistralAttention computes None ** -0.5.
    with pytest.raises(CheckpointError, match="ministral needs field 'head_dim'"):
        _cfg("ministral", drop=["head_dim"])
    with pytest.raises(CheckpointError, match="ministral needs field 'head_dim'"):
        _cfg("mistral", drop=["head_dim"], layer_types=None)
    assert _cfg("mistral", drop=["head_dim"]).head_dim == 8


def test_rope_scaling_is_read_as_transformers_standardises_it():
    yarn = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8192, "unknown_key": 1}
    cfg = _cfg("qwen2", drop=["rope_parameters"], rope_scaling=yarn, rope_theta=1e6)
    assert cfg.rope_theta == 1e6 and dict(cfg.rope_scaling) == {
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8192, "attention_factor": None,
        "beta_fast": 32.0, "beta_slow": 1.0, "mscale": None, "mscale_all_dim": None, "truncate": True}
    # The top-level original_max_position_embeddings wins; without a factor yarn uses the ratio.
    cfg = _cfg("llama", rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": None,
                                         "original_max_position_embeddings": 1024},
               original_max_position_embeddings=512, max_position_embeddings=4096)
    assert dict(cfg.rope_scaling)["original_max_position_embeddings"] == 512 and dict(cfg.rope_scaling)["factor"] == 8
    # llama3 without original_max_position_embeddings takes max_position_embeddings (Llama's default 2048).
    cfg = _cfg("llama", rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0,
                                         "low_freq_factor": 1.0, "high_freq_factor": 4.0})
    assert dict(cfg.rope_scaling)["original_max_position_embeddings"] == 2048


@pytest.mark.parametrize("params,match", [
    ({"rope_type": "linear", "rope_theta": 1e4}, "linear with 'factor'"),
    ({"rope_type": "linear", "rope_theta": 1e4, "factor": -2.0}, "factor must be a finite number > 0"),
    ({"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5}, "partial_rotary_factor 0.5")])
def test_bad_rope_parameters_are_refused_naming_the_key(params, match):
    with pytest.raises(CheckpointError, match=match):
        _cfg("llama", rope_parameters=params)


def test_every_layer_families_refuse_sliding_layer_types_without_a_window():
    # transformers' DynamicCache builds a sliding layer per entry and fails without a window.
    with pytest.raises(CheckpointError, match="layer_types lists 'sliding_attention' but sliding_window is null"):
        _cfg("mixtral", sliding_window=None, layer_types=["sliding_attention", "full_attention"])
    assert _cfg("mixtral", layer_types=["sliding_attention", "full_attention"]).windows == (4, 4)


def test_the_newer_families_read_their_own_keys():
    # Gemma 3: RoPE nested by layer type; the legacy keys reach their own layer type.
    g = _cfg("gemma3_text", drop=["rope_parameters"], rope_theta=5e5, rope_local_base_freq=500.0,
             query_pre_attn_scalar=16, sliding_window_pattern=2)
    assert (g.rope_theta, g.local_rope_theta, g.attn_scale, g.windows) == (5e5, 500.0, 0.25, (4, None))
    assert g.embed_scale == 32 ** 0.5 and g.act == "gelu_tanh" and g.norms == ("attn", "attn_out", "mlp", "mlp_out")
    # Its soft-caps as transformers' Gemma 3 applies them: the final one, not the attention one (never passed on).
    g = _cfg("gemma3_text", drop=["rope_parameters"], final_logit_softcapping=30.0, attn_logit_softcapping=20.0)
    assert (g.final_softcap, g.attn_softcap) == (30.0, None)
    with pytest.raises(CheckpointError, match="use_bidirectional_attention = True is not supported for gemma3_text"):
        _cfg("gemma3_text", drop=["rope_parameters"], use_bidirectional_attention=True)
    with pytest.raises(CheckpointError, match="sliding_attention.rope_type 'linear' is not supported"):
        _cfg("gemma3_text", rope_parameters={"sliding_attention": {"rope_type": "linear", "factor": 2.0}})
    # OLMo 3: a top-level rope_theta reaches the full layers only (the sliding ones keep the class default).
    o = _cfg("olmo3", drop=["rope_parameters"], rope_theta=1e4)
    assert (o.rope_theta, o.local_rope_theta, o.qk_norm) == (1e4, 5e5, "all")
    # Cohere 2 never reads head_dim; Phi-3's partial rotary; Mixtral's experts; Starcoder2's epsilon key.
    assert _cfg("cohere2", head_dim=4).head_dim == 8 and _cfg("cohere2").nope_full
    assert _cfg("phi3", partial_rotary_factor=0.5).rope_dim == 4
    with pytest.raises(CheckpointError, match="partial_rotary_factor 0.5 is not supported for mistral"):
        _cfg("mistral", partial_rotary_factor=0.5)
    m = _cfg("mixtral", num_local_experts=4, num_experts_per_tok=3)
    assert (m.mlp, m.n_experts, m.top_k, m.rope_theta) == ("moe", 4, 3, 10000.0)
    assert _cfg("starcoder2", norm_epsilon=1e-3).rms_norm_eps == 1e-3
    # Gemma 2: both soft-caps on by default (null switches one off), 1 local : 1 global, plain RoPE theta 1e4.
    g2 = _cfg("gemma2", drop=["rope_parameters", "hidden_act"])
    assert (g2.attn_softcap, g2.final_softcap, g2.windows, g2.rope_theta, g2.act) == (50.0, 30.0, (4, None), 1e4,
                                                                                       "gelu_tanh")
    assert _cfg("gemma2", attn_logit_softcapping=None).attn_softcap is None
    with pytest.raises(CheckpointError, match="use_bidirectional_attention = True is not supported for gemma2"):
        _cfg("gemma2", use_bidirectional_attention=True)


def test_gpt_oss_reads_its_own_keys():
    # Without rope_parameters, GptOssConfig fills in yarn (factor 32 over 4096 tokens, truncate false, theta 1.5e5).
    o = _cfg("gpt_oss", drop=["rope_parameters"])
    scaling = dict(o.rope_scaling)
    assert (o.rope_theta, scaling["rope_type"], scaling["factor"], scaling["original_max_position_embeddings"],
            scaling["truncate"]) == (1.5e5, "yarn", 32.0, 4096, False)
    assert (o.sinks, o.mlp, o.n_experts, o.top_k, o.glu_alpha, o.glu_limit, o.windows) == (
        True, "moe", 128, 4, 1.702, 7.0, (4, None))
    assert set(o.biases) == {"wq", "wk", "wv", "wo", "router", "experts_gate", "experts_up", "experts_down"}
    assert not set(_cfg("gpt_oss", attention_bias=False).biases) & {"wq", "wk", "wv", "wo"}
    # num_experts is transformers' attribute_map alias of num_local_experts.
    assert _cfg("gpt_oss", num_experts=8, num_experts_per_tok=2).n_experts == 8
    with pytest.raises(CheckpointError, match="num_experts = 8 and num_local_experts = 4 name one value"):
        _cfg("gpt_oss", num_experts=8, num_local_experts=4)
    # Keys without which transformers cannot run it, and the quantized checkpoints the hub ships.
    with pytest.raises(CheckpointError, match="gpt_oss needs field 'swiglu_limit'"):
        _cfg("gpt_oss", swiglu_limit=None)
    with pytest.raises(CheckpointError, match="quantization_config \\(quant_method 'mxfp4'\\) is not supported"):
        _cfg("gpt_oss", quantization_config={"quant_method": "mxfp4"})


def test_a_llama_config_with_a_sliding_window_is_refused_as_transformers_is_ambiguous():
    # LlamaModel's mask ignores sliding_window; transformers' DynamicCache keeps sliding_window - 1 tokens
    # from it, so Llama's forward pass and its generate disagree (tests/test_crosscheck_config.py shows it).
    with pytest.raises(CheckpointError, match="sliding_window = 4 but llama has no sliding window"):
        _cfg("llama", sliding_window=4)
    assert _cfg("llama", sliding_window=None).windows == (None, None)


@pytest.mark.parametrize("model_type,key,value,match", [
    ("qwen2", "max_window_layers", -1, "'max_window_layers' must be an int >= 0, got -1"),
    ("gemma3_text", "sliding_window_pattern", 0, "'sliding_window_pattern' must be an int >= 1, got 0"),
    ("cohere2", "sliding_window_pattern", "4", "'sliding_window_pattern' must be an int >= 1, got '4'")])
def test_layer_pattern_keys_are_checked_naming_the_key(model_type, key, value, match):
    with pytest.raises(CheckpointError, match=match):
        _cfg(model_type, drop=["rope_parameters"], use_sliding_window=True, **{key: value})


def test_a_default_token_id_outside_the_vocabulary_is_dropped_and_an_explicit_one_refused():
    cfg = _cfg("starcoder2", drop=["bos_token_id", "eos_token_id"])  # class defaults 50256 > vocabulary 61
    assert cfg.bos_token_id is None and cfg.eos_token_ids == ()
    assert _cfg("mistral", drop=["bos_token_id", "eos_token_id"]).eos_token_ids == (2,)  # in range: kept
    with pytest.raises(CheckpointError, match="eos_token_id must be token ids in \\[0, 61\\), got 50256"):
        _cfg("starcoder2", eos_token_id=50256)
