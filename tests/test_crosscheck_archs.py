"""Each architecture swaref loads, against transformers 5.24.0 itself (the `crosscheck` extra).

For every family a tiny random checkpoint is built by transformers (weights redrawn
so that attention is peaked and logits are not flat), saved with save_pretrained
and loaded by swaref.models.load_model; the reference is what
AutoModelForCausalLM.from_pretrained builds from the same directory (eager
attention).  Per family:

* logits within 1e-4 for prompts of 3, W, W+1 and 3W+2 tokens, prefilled with
  chunks of 1, 3, W and the whole prompt, on both backends;
* 30 greedy tokens equal to transformers' ``generate`` and to the argmax of
  transformers re-scoring prompt + tokens in one forward pass;
* controls that must fail: transformers with one window off by one (W + 1),
  and swaref with the family's key difference removed.

One model per family (module-scoped fixtures) keeps the file to a few seconds.
"""
import json
import os
import dataclasses

import numpy as np
import pytest

from oracle import assert_close
from crosscheck_helpers import BACKENDS, hf_logits, require_extra, scale_up_weights

pytestmark = pytest.mark.crosscheck

require_extra()
import torch  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

from swaref import models as M  # noqa: E402

ATOL = 1e-4
N_NEW = 30
VOCAB = 96
_TINY = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
             head_dim=8, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=None, pad_token_id=0,
             tie_word_embeddings=False, max_position_embeddings=256)
S, F = "sliding_attention", "full_attention"

# family -> (config.json keys, W, the control that removes the family's key difference from swaref's model)
FAMILIES = {
    "ministral": (dict(model_type="ministral", num_hidden_layers=3, sliding_window=4, layer_types=[S, F, S]), 4,
                  {"windows": [4, 4, 4]}),
    # A Mistral config with layer_types: AutoModelForCausalLM loads it as Ministral (docs/model.md).
    "mistral+layer_types": (dict(model_type="mistral", num_hidden_layers=3, sliding_window=5, layer_types=[F, S, S]),
                            5, {"windows": [5, 5, 5]}),
    # Qwen2: layers >= max_window_layers slide (the code, not the docstring); q/k/v biases.
    "qwen2": (dict(model_type="qwen2", num_hidden_layers=3, use_sliding_window=True, sliding_window=5,
                   max_window_layers=1), 5, {"biases": ()}),
    "qwen3": (dict(model_type="qwen3", num_hidden_layers=3, use_sliding_window=True, sliding_window=6,
                   layer_types=[S, F, S]), 6, {"qk_norm": ""}),
    "qwen3-bias": (dict(model_type="qwen3", num_hidden_layers=2, use_sliding_window=True, sliding_window=4,
                        max_window_layers=0, attention_bias=True), 4, {"biases": ("wq", "wk", "wv")}),
    # Llama: no window; attention and MLP biases.  W only sets the prompt lengths and chunks here.
    "llama": (dict(model_type="llama", num_hidden_layers=2, attention_bias=True, mlp_bias=True), 4, {"biases": ()}),
    # Starcoder2: LayerNorm with bias, GELU(tanh) c_fc/c_proj MLP, biases everywhere.
    "starcoder2": (dict(model_type="starcoder2", num_hidden_layers=2, sliding_window=5, use_bias=True), 5,
                   {"biases": ()}),
    # Phi-3: fused projections, partial rotary (half of each head rotates).
    "phi3": (dict(model_type="phi3", num_hidden_layers=2, sliding_window=4, partial_rotary_factor=0.5), 4,
             {"rope_dim": None}),
    # Mixtral: top-2 of 4 experts.
    "mixtral": (dict(model_type="mixtral", num_hidden_layers=2, sliding_window=5, num_local_experts=4,
                     num_experts_per_tok=2), 5, {"top_k": 1}),
    # Gemma 3: 2 local : 1 global, local theta 1e4, global 1e6 with linear scaling, query_pre_attn_scalar.
    "gemma3": (dict(model_type="gemma3_text", num_hidden_layers=3, sliding_window=4, sliding_window_pattern=3,
                    query_pre_attn_scalar=16, hidden_activation="gelu_pytorch_tanh",
                    rope_parameters={"full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6},
                                     "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}), 4,
               {"local_rope_theta": None}),
    # Cohere 2: 3 sliding layers with interleaved RoPE, 1 global layer without, parallel blocks, logit_scale.
    "cohere2": (dict(model_type="cohere2", num_hidden_layers=4, sliding_window=4, logit_scale=0.25), 4,
                {"nope_full": False}),
    # OLMo 3: post-norms, q/k norms over the projection, yarn on the full-attention layer only.
    "olmo3": (dict(model_type="olmo3", num_hidden_layers=4, sliding_window=5,
                   rope_parameters={"full_attention": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 5e5,
                                                       "original_max_position_embeddings": 64},
                                    "sliding_attention": {"rope_type": "default", "rope_theta": 5e5}}), 5,
              {"rope_scaling": ()}),
    # Gemma 2: 1 local : 1 global (layer_types as Gemma2Config derives them), attention and final-logit
    # soft-caps small enough to bite, query_pre_attn_scalar; the control drops the attention soft-cap.
    "gemma2": (dict(model_type="gemma2", num_hidden_layers=3, sliding_window=4, query_pre_attn_scalar=16,
                    hidden_activation="gelu_pytorch_tanh", attn_logit_softcapping=5.0, final_logit_softcapping=3.0),
               4, {"attn_softcap": None}),
    # Gemma 3 with Gemma 2's soft-caps in its config (off by default): transformers applies the final one and
    # ignores attn_logit_softcapping (Gemma3Attention never passes it on); swaref does the same.
    "gemma3-softcap": (dict(model_type="gemma3_text", num_hidden_layers=2, sliding_window=4, sliding_window_pattern=2,
                            query_pre_attn_scalar=16, attn_logit_softcapping=4.0, final_logit_softcapping=3.0), 4,
                       {"final_softcap": None}),
    # gpt-oss: learned sinks, 1 sliding : 1 full, yarn (an original context short enough to scale these
    # positions), q/k/v/o biases, top-2 of 4 biased experts with the clamped SwiGLU; the control drops the sinks.
    "gpt_oss": (dict(model_type="gpt_oss", num_hidden_layers=3, sliding_window=5, num_local_experts=4,
                     num_experts_per_tok=2, swiglu_limit=3.0, max_position_embeddings=64,
                     rope_parameters={"rope_type": "yarn", "factor": 4.0, "beta_fast": 32.0, "beta_slow": 1.0,
                                      "truncate": False, "original_max_position_embeddings": 16,
                                      "rope_theta": 150000.0}), 5,
                {"sinks": False}),
}
CLASSES = {"ministral": "MinistralForCausalLM", "mistral": "MistralForCausalLM", "llama": "LlamaForCausalLM",
           "qwen2": "Qwen2ForCausalLM",
           "qwen3": "Qwen3ForCausalLM", "starcoder2": "Starcoder2ForCausalLM", "phi3": "Phi3ForCausalLM",
           "mixtral": "MixtralForCausalLM", "gemma3_text": "Gemma3ForCausalLM", "cohere2": "Cohere2ForCausalLM",
           "olmo3": "Olmo3ForCausalLM", "gemma2": "Gemma2ForCausalLM", "gpt_oss": "GptOssForCausalLM"}


def write_random_checkpoint(d, keys, seed=0):
    """A random checkpoint written by transformers: config.json as given, weights scaled up, safetensors."""
    keys = dict(_TINY, **keys, architectures=[CLASSES[keys["model_type"]]])
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(keys, f)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(d))
    scale_up_weights(model, seed)                   # biases 1 +- 0.1 too (large enough to matter)
    model.save_pretrained(d)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(keys, f)  # the file as a hub checkpoint has it (save_pretrained writes Ministral's model_type)
    return d


def load_hf(d, **override):
    cfg = AutoConfig.from_pretrained(d, **override)
    return AutoModelForCausalLM.from_pretrained(d, config=cfg, attn_implementation="eager").eval()


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    keys, W, control = FAMILIES[request.param]
    d = write_random_checkpoint(str(tmp_path_factory.mktemp(request.param.replace("+", "_"))), keys)
    return request.param, load_hf(d), M.load_model(d), W, control, d


def prompt_ids(T, seed=0):
    return np.random.default_rng(seed).integers(2, VOCAB, T)


def test_auto_model_builds_the_expected_class(family):
    name, hf, sw, W, _, _ = family
    model_type = FAMILIES[name][0]["model_type"]
    assert type(hf).__name__ == (CLASSES["ministral"] if name == "mistral+layer_types" else CLASSES[model_type])
    assert (W in sw.config.windows) != (name == "llama")
    assert sw.config.arch == ("ministral" if name == "mistral+layer_types" else model_type)


@pytest.mark.parametrize("backend", BACKENDS)
def test_logits_match_transformers_for_every_chunking(family, backend):
    name, hf, sw, W, _, _ = family
    worst = 0.0
    for T in (3, W, W + 1, 3 * W + 2):
        ids = prompt_ids(T, seed=T)
        want = hf_logits(hf, ids)
        for chunk in sorted({1, 3, W, T}):
            got = M.prefill_prompt(sw, ids, M.new_caches(sw, T), chunk_size=chunk, logits="all", backend=backend)
            assert_close(got, want, atol=ATOL, name=f"{name} T={T} chunk={chunk} backend={backend}")
            worst = max(worst, float(np.abs(got - want).max()))
    print(f"\n{name} {backend}: max |logit diff| {worst:.2e}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_greedy_tokens_match_transformers_generate(family, backend):
    name, hf, sw, W, _, _ = family
    prompt = prompt_ids(2 * W + 3, seed=7)
    ours = M.generate(sw, [prompt], max_new_tokens=N_NEW, chunk_size=3, backend=backend).tokens[0]
    with torch.no_grad():
        theirs = hf.generate(torch.tensor(prompt)[None], max_new_tokens=N_NEW, min_new_tokens=N_NEW,
                             do_sample=False, use_cache=True)[0, len(prompt):].tolist()
    assert ours == theirs, f"{name}: swaref greedy differs from transformers.generate"
    rescored = hf_logits(hf, np.concatenate([prompt, ours]))[len(prompt) - 1: -1].argmax(-1).tolist()
    assert ours == rescored, f"{name}: swaref greedy differs from transformers re-scoring the whole sequence"


def test_control_a_window_off_by_one_is_detected(family):
    name, hf, sw, W, _, d = family
    ids = prompt_ids(3 * W + 2, seed=1)
    wider = load_hf(d, sliding_window=W + 1)
    diff = np.abs(hf_logits(wider, ids) - M.prefill_prompt(sw, ids, M.new_caches(sw, len(ids)), logits="all"))
    if name == "llama":
        # transformers' Llama forward ignores sliding_window (its generate cache does not: swaref refuses such
        # a config, test_models_hfconfig.py); swaref's model has no window, so here they agree.
        assert diff.max() < ATOL
        return
    assert diff[:W].max() < ATOL, "positions < W see the same keys under W and W + 1"
    print(f"\n{name}: window W+1 differs by {diff[W:].max():.2e}")
    assert diff[W:].max() > 100 * ATOL, f"{name}: a window of W+1 should be visible, max diff {diff[W:].max():.2e}"


def test_control_the_family_s_key_difference_is_detected(family):
    name, hf, sw, W, control, _ = family
    ids = prompt_ids(3 * W + 2, seed=3)
    cfg = dataclasses.replace(sw.config, **control)
    keep = M.weights.expected_shapes(cfg)[1]
    layers = [M.LayerWeights(**{k: getattr(lw, k) for k in keep}) for lw in sw.layers]
    other = M.Model(cfg, sw.embed, layers, sw.final_norm, sw.lm_head, sw.final_norm_b)
    diff = np.abs(hf_logits(hf, ids) - M.prefill_prompt(other, ids, M.new_caches(other, len(ids)), logits="all"))
    print(f"\n{name}: without {control} differs by {diff.max():.2e}")
    assert diff.max() > 100 * ATOL, f"{name}: removing {control} should be visible, max diff {diff.max():.2e}"
