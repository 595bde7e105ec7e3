"""swaref.models.checkpoint: Hugging Face and Mistral-native checkpoints written by the tests, loaded back;
every malformed, unsafe or unsupported one refused with a message naming the file and field."""
import dataclasses
import json
import os

import numpy as np
import pytest

from oracle import assert_close
from model_helpers import (assert_packed, hf_config, hf_tensors, make_cfg, make_model, needs_safetensors,
                           oracle_logits, present, same_weights, write_checkpoint, write_mistral_native)

from swaref import models as M
from swaref.errors import SwarefError
from swaref.models import rope as R


@needs_safetensors
@pytest.mark.parametrize("dtype,shards,tie", [(np.float32, 1, False), (np.float16, 1, False), ("bf16", 1, False),
                                              (np.float32, 3, False), (np.float32, 1, True)])
def test_checkpoint_round_trip(tmp_path, dtype, shards, tie):
    model = make_model(seed=2, tie=tie)
    if dtype == "bf16":  # values exactly representable in bfloat16, so the round trip is exact
        for lw in model.layers:
            for arr in present(lw).values():
                arr.view(np.uint32)[...] &= 0xFFFF0000
        for a in (model.embed, model.final_norm, model.lm_head):
            a.view(np.uint32)[...] &= 0xFFFF0000
    if dtype == np.float16:
        model = M.Model(model.config, model.embed.astype(np.float16).astype(np.float32),
                        [M.LayerWeights(**{n: a.astype(np.float16).astype(np.float32)
                                           for n, a in present(lw).items()}) for lw in model.layers],
                        model.final_norm.astype(np.float16).astype(np.float32),
                        model.lm_head.astype(np.float16).astype(np.float32))
    loaded = M.load_model(write_checkpoint(str(tmp_path), model, dtype=dtype, shards=shards))
    same_weights(loaded, model)
    assert_packed(loaded)      # every matrix copied into one arena, in the order a decode step reads them
    assert loaded.config.rope_theta == 10000.0 and loaded.config.rope_layout == "half"
    assert (loaded.lm_head is loaded.embed) == tie

def _bad(tmp_path, model, mutate_config=None, mutate_tensors=None, **kw):
    cfg = hf_config(model.config)
    tens = hf_tensors(model)
    if mutate_config:
        mutate_config(cfg)
    if mutate_tensors:
        mutate_tensors(tens)
    return write_checkpoint(str(tmp_path), model, cfg, tens, **kw)

BAD_CHECKPOINTS = [
    ("arch", lambda c: c.update(architectures=["GPT2LMHeadModel"], model_type="gpt2"), None, "unsupported architecture"),
    ("heads0", lambda c: c.update(num_attention_heads=0), None, "num_attention_heads"),
    ("gqa", lambda c: c.update(num_key_value_heads=3), None, "multiple of"),
    ("window", lambda c: c.update(sliding_window=0), None, "sliding_window"),
    ("theta", lambda c: c.update(rope_parameters={"rope_type": "default", "rope_theta": -1.0}), None, "rope_theta"),
    ("dynamic", lambda c: c.update(rope_parameters={"rope_type": "dynamic", "rope_theta": 1e4}), None,
     "rope_type 'dynamic' is not supported"),
    ("act", lambda c: c.update(hidden_act="gelu"), None, "hidden_act"),
    # A missing key means transformers' default (MistralConfig: hidden_size 4096), which these tensors contradict.
    ("missing_field", lambda c: c.pop("hidden_size"), None, "expected \\[61, 4096\\] from config.json"),
    ("eos", lambda c: c.update(eos_token_id=1000), None, "eos_token_id"),
    ("shape", None, lambda t: t.update({"model.layers.1.self_attn.k_proj.weight": np.zeros((8, 32), np.float32)}),
     "k_proj.weight.*shape \\[8, 32\\], expected \\[16, 32\\]"),
    ("dtype", None, lambda t: t.update({"model.norm.weight": np.zeros(32, np.int32)}), "dtype I32"),
    ("missing_tensor", None, lambda t: t.pop("model.layers.0.mlp.up_proj.weight"), "missing 1 tensor"),
    ("extra_tensor", None, lambda t: t.update({"model.layers.0.self_attn.q_proj.bias": np.zeros(32, np.float32)}),
     "unexpected tensor"),
    ("nan", None, lambda t: t["model.layers.1.mlp.down_proj.weight"].__setitem__((3, 4), np.nan), "non-finite.*\\(3, 4\\)"),
]

@needs_safetensors
@pytest.mark.parametrize("name,mc,mt,match", BAD_CHECKPOINTS, ids=[b[0] for b in BAD_CHECKPOINTS])
def test_bad_checkpoint_is_rejected_with_a_clear_message(tmp_path, name, mc, mt, match):
    model = make_model(seed=2)
    d = _bad(tmp_path, model, mc, mt)
    with pytest.raises(M.CheckpointError, match=match):
        M.load_model(d)

@needs_safetensors
def test_missing_files(tmp_path):
    model = make_model(seed=2)
    with pytest.raises(M.CheckpointFileError, match="does not exist"):
        M.load_model(str(tmp_path / "nowhere"))
    d = write_checkpoint(str(tmp_path / "a"), model)
    os.remove(os.path.join(d, "config.json"))
    with pytest.raises(M.CheckpointFileError, match="config.json"):
        M.load_model(d)
    d = write_checkpoint(str(tmp_path / "b"), model)
    os.remove(os.path.join(d, "model.safetensors"))
    with pytest.raises(M.CheckpointFileError, match="neither model.safetensors"):
        M.load_model(d)
    d = write_checkpoint(str(tmp_path / "c"), model, shards=2)
    os.remove(os.path.join(d, "model-00002-of-00002.safetensors"))
    with pytest.raises(M.CheckpointFileError, match="00002-of-00002"):
        M.load_model(d)
    d = write_checkpoint(str(tmp_path / "e"), model)
    with open(os.path.join(d, "model.safetensors"), "r+b") as f:
        f.truncate(100)
    with pytest.raises(M.CheckpointError, match="not a readable safetensors"):
        M.load_model(d)

@needs_safetensors
def test_layer_types_give_per_layer_windows(tmp_path):
    model = make_model(window=[4, None], seed=2)
    cfg = hf_config(model.config)
    cfg["layer_types"] = ["sliding_attention", "full_attention"]
    loaded = M.load_model(write_checkpoint(str(tmp_path), model, cfg))
    assert loaded.config.windows == (4, None)

@needs_safetensors
def test_mistral_native_checkpoint_equals_its_hf_conversion(tmp_path):
    # The same model in both layouts: native (interleaved RoPE) and HF (rotate-half, Q/K rows permuted
    # the way transformers' converter does).  Both loads must give the same logits.
    native = make_model(seed=8, layout="interleaved", window=[3, None])
    cfg = native.config
    params = {"dim": cfg.hidden_size, "n_layers": cfg.n_layers, "head_dim": cfg.head_dim, "hidden_dim":
              cfg.intermediate_size, "n_heads": cfg.n_heads, "n_kv_heads": cfg.n_kv_heads, "norm_eps": cfg.rms_norm_eps,
              "vocab_size": cfg.vocab_size, "sliding_window": [3, None], "rope_theta": cfg.rope_theta}
    a = M.load_model(write_mistral_native(str(tmp_path / "native"), native, params))
    assert a.config.rope_layout == "interleaved" and a.config.windows == (3, None)
    same_weights(a, native)
    layers = []
    for lw in native.layers:
        arrays = present(lw)
        arrays["wq"] = R.interleaved_to_half(lw.wq, cfg.n_heads, cfg.head_dim)
        arrays["wk"] = R.interleaved_to_half(lw.wk, cfg.n_kv_heads, cfg.head_dim)
        layers.append(M.LayerWeights(**arrays))
    hf = M.Model(make_cfg(window=[3, None]), native.embed, layers, native.final_norm, native.lm_head)
    hf_cfg = hf_config(hf.config)
    hf_cfg["layer_types"] = ["sliding_attention", "full_attention"]
    hf_cfg["sliding_window"] = 3
    b = M.load_model(write_checkpoint(str(tmp_path / "hf"), hf, hf_cfg))
    toks = np.arange(13) % 61
    la = M.prefill_prompt(a, toks, M.new_caches(a, 13), logits="all")
    lb = M.prefill_prompt(b, toks, M.new_caches(b, 13), logits="all")
    assert_close(la, lb, atol=1e-5)
    assert_close(la, oracle_logits(native, toks), atol=1e-4)
    del params["rope_theta"]
    d = write_mistral_native(str(tmp_path / "no_theta"), native, params)
    with pytest.raises(M.CheckpointError, match="no rope_theta; pass it explicitly"):
        M.load_model(d)
    assert M.load_model(d, rope_theta=1e6).config.rope_theta == 1e6
    os.remove(os.path.join(d, "consolidated.safetensors"))
    with pytest.raises(M.CheckpointFileError, match="consolidated.safetensors"):
        M.load_model(d, rope_theta=1e4)


# ------------------------------------------ sizes and nesting refused before allocation (issue 8, item 9)

@needs_safetensors
@pytest.mark.parametrize("field,value", [("num_hidden_layers", 10 ** 9), ("vocab_size", 10 ** 12),
                                         ("hidden_size", 10 ** 9), ("intermediate_size", 10 ** 10),
                                         ("num_attention_heads", 10 ** 6), ("head_dim", 10 ** 8)])
def test_absurd_sizes_are_refused_naming_the_field(tmp_path, field, value):
    d = _bad(tmp_path, make_model(seed=2), lambda c: c.update({field: value}))
    with pytest.raises(M.CheckpointError, match=f"{field} must be an int in \\[1, \\d+\\], got {value}") as e:
        M.load_model(d)
    assert e.value.kind == "checkpoint"


def _write_json_text(d, name, text):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "w") as f:
        f.write(text)
    return d


@pytest.mark.parametrize("name", ["config.json", "params.json"])
def test_deeply_nested_json_is_refused_before_parsing(tmp_path, name):
    deep = '{"vocab_size": 61, "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    d = _write_json_text(str(tmp_path), name, deep)
    with pytest.raises(M.CheckpointError, match="nests 100001 levels deep") as e:
        M.load_model(d)
    assert e.value.kind == "format"


@needs_safetensors
def test_nesting_inside_strings_does_not_count_and_real_nesting_within_the_limit_loads(tmp_path):
    model = make_model(seed=2)
    cfg = hf_config(model.config)
    cfg["note"] = "[[[[{{{{" * 1000 + '\\" ]'
    cfg["deep"] = json.loads("[" * 30 + "]" * 30)
    loaded = M.load_model(write_checkpoint(str(tmp_path), model, cfg))
    same_weights(loaded, model)


@needs_safetensors
def test_deeply_nested_index_is_refused(tmp_path):
    d = write_checkpoint(str(tmp_path), make_model(seed=2), shards=2)
    _write_json_text(d, "model.safetensors.index.json", '{"weight_map": ' + "[" * 5000 + "]" * 5000 + "}")
    with pytest.raises(M.CheckpointError, match="nests 5001 levels deep"):
        M.load_model(d)


def test_an_oversized_config_is_refused_before_reading(tmp_path):
    d = _write_json_text(str(tmp_path), "config.json", "{" + " " * (5 << 20) + "}")
    with pytest.raises(M.CheckpointError, match=r"config.json is 5242882 bytes; at most 4194304 are read"):
        M.load_model(d)


@needs_safetensors
def test_a_huge_sliding_window_loads_and_generates_in_bounded_memory(tmp_path, capsys):
    from swaref.cli import main
    model = make_model(seed=6, window=None)
    cfg = hf_config(model.config)
    cfg["sliding_window"] = 10 ** 12
    d = write_checkpoint(str(tmp_path), model, cfg)
    assert M.load_model(d).config.windows == (10 ** 12, 10 ** 12)
    assert main(["generate", "--model", d, "--prompt", "5 17 3", "--max-new-tokens", "4", "--no-stop"]) == 0
    want = M.generate(model, [[5, 17, 3]], max_new_tokens=4, stop_on_eos=False).tokens[0]
    out = capsys.readouterr()
    assert [int(x) for x in out.out.split()] == want
    # 2 layers x 7 slots (3 + 4 tokens) x (k and v: 2 heads x 8 float32, + an int64 position) = 1904 bytes
    assert "peak cache memory: 1.9 KiB" in out.err


@needs_safetensors
def test_llama_has_no_window_and_the_rope_theta_override_is_validated(tmp_path):
    model = make_model(seed=2, window=None)
    cfg = hf_config(model.config)
    cfg.update(architectures=["LlamaForCausalLM"], model_type="llama", sliding_window=None)
    d = write_checkpoint(str(tmp_path), model, cfg)
    assert M.load_model(d).config.windows == (None, None)
    assert M.load_model(d, rope_theta=5e5).config.rope_theta == 5e5
    with pytest.raises(M.CheckpointError, match="rope_theta must be a finite number > 0, got -1"):
        M.load_model(d, rope_theta=-1)


def test_a_missing_optional_package_is_a_dependency_error(tmp_path, monkeypatch):
    import sys
    model = make_model(seed=2)
    d = str(tmp_path)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(hf_config(model.config), f)
    open(os.path.join(d, "model.safetensors"), "wb").close()
    monkeypatch.setitem(sys.modules, "safetensors", None)
    with pytest.raises(SwarefError, match="pip install 'swaref\\[model\\]'") as e:
        M.load_model(d)
    assert e.value.kind == "dependency"


@needs_safetensors
def test_layer_types_must_list_one_entry_per_layer(tmp_path):
    model = make_model(window=[4, None], seed=2)
    cfg = hf_config(model.config)
    cfg["layer_types"] = ["sliding_attention", "full_attention", "full_attention"]
    with pytest.raises(M.CheckpointError, match="'layer_types' must list one entry per layer \\(num_hidden_layers = 2"):
        M.load_model(write_checkpoint(str(tmp_path), model, cfg))


# One config per family with every family-specific tensor layout (renames, fused, per-expert, w - 1 norms).
FAMILY_KEYS = {"starcoder2": dict(hidden_act="gelu_pytorch_tanh"), "phi3": {}, "qwen2": {},
               "mixtral": dict(num_local_experts=3, num_experts_per_tok=2),
               "gemma3_text": dict(rope_parameters=None, query_pre_attn_scalar=8, tie_word_embeddings=True),
               "cohere2": dict(rope_parameters=None), "olmo3": dict(rope_parameters=None),
               "gemma2": dict(tie_word_embeddings=True),
               "gpt_oss": dict(num_local_experts=3, num_experts_per_tok=2, rope_parameters=None)}

@needs_safetensors
@pytest.mark.parametrize("dtype,shards", [(np.float16, 3), ("bf16", 1)])
@pytest.mark.parametrize("model_type", list(FAMILY_KEYS))
def test_every_family_loads_its_tensor_layout_sharded_and_in_half_precision(tmp_path, model_type, dtype, shards):
    from swaref.models.hfconfig import config_from_dict
    raw = hf_config(make_cfg(window=4), model_type, **FAMILY_KEYS[model_type])
    raw = {k: v for k, v in raw.items() if v is not None}
    model = M.random_model(config_from_dict(raw), seed=3)
    tensors = {k: (v.astype(np.float16).astype(np.float32) if dtype == np.float16 else
                   (np.ascontiguousarray(v).view(np.uint32) & 0xFFFF0000).view(np.float32))
               for k, v in hf_tensors(model, model_type).items()}
    loaded = M.load_model(write_checkpoint(str(tmp_path), model, raw, tensors, dtype=dtype, shards=shards))
    assert dataclasses.replace(loaded.config, sampling_defaults=()) == model.config
    assert np.array_equal(loaded.embed, tensors["model.embed_tokens.weight"])
    same_weights(loaded, model, atol=2e-2)  # the rounding of a float16 / bfloat16 store, and nothing else
    assert_packed(loaded)   # fused q/k/v and gate/up (Phi-3, gpt-oss) unpacked and experts stacked into the arena
    assert_packed(M.load_model(os.path.join(str(tmp_path)), dtype="bfloat16"))
    ids = np.arange(9) % 61
    assert np.abs(M.prefill_prompt(loaded, ids, M.new_caches(loaded, 9), logits="all") -
                  M.prefill_prompt(model, ids, M.new_caches(model, 9), logits="all")).max() < 0.5
