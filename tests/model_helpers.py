"""Shared by the tests of swaref.models: model factories, the dense float64 oracle, checkpoint writers.

The independent computation is ``oracle_logits``: a dense float64 forward
pass written from the formulas (complex-number RoPE, a dense masked softmax
from tests/oracle.py, GQA by repeating K/V), sharing no code with
swaref.models.  swaref's chunked / cached / batched paths must all agree
with it.  The checkpoint writers spell every tensor name out here, apart
from the names swaref declares.
"""
import json
import os
import struct

import numpy as np
import pytest

from oracle import assert_close, dense_attention_f64

from swaref import models as M
from swaref.models.bf16 import as_float32

try:
    import safetensors.numpy as safetensors_numpy
except ImportError:  # pragma: no cover - the test extra installs it
    safetensors_numpy = None
needs_safetensors = pytest.mark.skipif(safetensors_numpy is None, reason="the loader tests need the 'safetensors' "
                                                                          "package (pip install swaref[test])")


def make_cfg(window=4, n_layers=2, hidden=32, n_heads=4, n_kv=2, head_dim=8, vocab=61, inter=48,
             layout="half", tie=False, eos=(), **features):
    return M.ModelConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, n_layers=n_layers,
                         n_heads=n_heads, n_kv_heads=n_kv, head_dim=head_dim, windows=window,
                         rope_theta=10000.0, rms_norm_eps=1e-5, rope_layout=layout, tie_word_embeddings=tie,
                         eos_token_ids=eos, **features)


# Scale 1.5 makes attention peaked, so a key let in or left out moves the logits far beyond the tolerance.
def make_model(seed=0, scale=1.5, **kw):
    return M.random_model(make_cfg(**kw), seed=seed, scale=scale)

def oracle_rope(x, positions, theta, layout, rot_dim=None):
    """x [T, H, D] float64 rotated by multiplying complex pairs by exp(i * p * theta^(-2k/R)).

    Only the first R = rot_dim dims rotate (partial rotary); plain RoPE only (no scaling)."""
    T, H, D = x.shape
    R = D if rot_dim is None else rot_dim
    k = np.arange(R // 2)
    ang = np.asarray(positions, dtype=np.float64)[:, None, None] * theta ** (-2.0 * k / R)
    out = np.array(x, dtype=np.float64)
    if layout == "half":
        z = (x[..., : R // 2] + 1j * x[..., R // 2: R]) * np.exp(1j * ang)
        out[..., : R // 2], out[..., R // 2: R] = z.real, z.imag
        return out
    z = (x[..., 0:R:2] + 1j * x[..., 1:R:2]) * np.exp(1j * ang)
    out[..., 0:R:2], out[..., 1:R:2] = z.real, z.imag
    return out

def oracle_logits(model, tokens):
    """Dense float64 forward of the whole sequence at positions 0..T-1 -> [T, V].

    Written from the formulas, per feature: RMSNorm or LayerNorm (with or without
    bias) in whichever of the four slots the layer has, sequential or parallel
    blocks, SwiGLU / GeGLU / gpt-oss's clamped SwiGLU / plain / top-k mixture-of-experts
    MLP (router and expert biases), biases, q/k norms per head or over the projection,
    attention and embedding / logit scales, attention and final soft-caps, learned
    sinks (tests/oracle.py's dense softmax has both), per-layer
    RoPE (plain RoPE; local theta; none).  Scaled RoPE variants are not here: they are
    held to transformers' own rotary embeddings (tests/test_crosscheck_rope.py)."""
    cfg = model.config
    assert not cfg.rope_scaling or cfg.nope_full and all(w is not None for w in cfg.windows), "plain RoPE only"
    f = lambda a: None if a is None else np.asarray(as_float32(a), dtype=np.float64)  # noqa: E731 (bf16 widened)
    T = len(tokens)
    pos = np.arange(T)

    def norm(x, w, b=None, kind=cfg.norm):
        if kind == "rms":
            return f(w) * x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + cfg.rms_norm_eps)
        c = x - x.mean(axis=-1, keepdims=True)
        return f(w) * c / np.sqrt(np.mean(c * c, axis=-1, keepdims=True) + cfg.rms_norm_eps) + (
            0.0 if b is None else f(b))

    def lin(x, w, b=None):  # a projection, plus its bias when the model has one
        return x @ f(w).T + (0.0 if b is None else f(b))

    def act(g):
        if cfg.act == "silu":
            return g / (1 + np.exp(-g))
        return 0.5 * g * (1 + np.tanh(np.sqrt(2 / np.pi) * (g + 0.044715 * g ** 3)))

    def gated(g, u):
        if cfg.glu_limit is None:
            return act(g) * u
        # gpt-oss's GptOssExperts._apply_gate, written out: gate capped above, up clamped both ways
        g, u = np.minimum(g, cfg.glu_limit), np.clip(u, -cfg.glu_limit, cfg.glu_limit)
        return g / (1 + np.exp(-cfg.glu_alpha * g)) * (u + 1)

    def expert_bias(b, e):
        return None if b is None else b[e]

    def mlp(x, lw):
        if cfg.mlp == "plain":
            return lin(act(lin(x, lw.w_up, lw.b_up)), lw.w_down, lw.b_down)
        if cfg.mlp == "gated":
            return lin(gated(lin(x, lw.w_gate, lw.b_gate), lin(x, lw.w_up, lw.b_up)), lw.w_down, lw.b_down)
        out = np.zeros_like(x)
        for t in range(len(x)):  # token by token: softmax, top-k, renormalise, weighted experts
            z = lin(x[t], lw.router, lw.b_router)
            p = np.exp(z - z.max())
            p /= p.sum()
            chosen = sorted(range(len(p)), key=lambda e: -p[e])[: cfg.top_k]
            for e in chosen:
                g = lin(x[t], lw.experts_gate[e], expert_bias(lw.b_experts_gate, e))
                u = lin(x[t], lw.experts_up[e], expert_bias(lw.b_experts_up, e))
                y = lin(gated(g, u), lw.experts_down[e], expert_bias(lw.b_experts_down, e))
                out[t] += p[e] / sum(p[c] for c in chosen) * y
        return out

    h = f(model.embed)[np.asarray(tokens)] * (1.0 if cfg.embed_scale is None else np.float32(cfg.embed_scale))
    for lw, w in zip(model.layers, cfg.windows):
        x = h if lw.attn_norm is None else norm(h, lw.attn_norm, lw.attn_norm_b)
        q, k, v = lin(x, lw.wq, lw.bq), lin(x, lw.wk, lw.bk), lin(x, lw.wv, lw.bv)
        if cfg.qk_norm == "all":
            q, k = norm(q, lw.q_norm, kind="rms"), norm(k, lw.k_norm, kind="rms")
        q = q.reshape(T, cfg.n_heads, cfg.head_dim)
        k = k.reshape(T, cfg.n_kv_heads, cfg.head_dim)
        v = v.reshape(T, cfg.n_kv_heads, cfg.head_dim)
        if cfg.qk_norm == "head":  # per-head RMSNorm over D (Qwen3)
            q, k = norm(q, lw.q_norm, kind="rms"), norm(k, lw.k_norm, kind="rms")
        if not (w is None and cfg.nope_full):
            theta = cfg.local_rope_theta if w is not None and cfg.local_rope_theta is not None else cfg.rope_theta
            q = oracle_rope(q, pos, theta, cfg.rope_layout, cfg.rope_dim)
            k = oracle_rope(k, pos, theta, cfg.rope_layout, cfg.rope_dim)
        a = dense_attention_f64(q, k, v, pos, pos, w, cfg.attn_scale, softcap=cfg.attn_softcap, sinks=lw.sinks)
        a = lin(a.reshape(T, -1), lw.wo, lw.bo)
        if cfg.parallel:
            h = h + a + mlp(x, lw)
            continue
        h = h + (a if lw.attn_out_norm is None else norm(a, lw.attn_out_norm))
        m = mlp(h if lw.mlp_norm is None else norm(h, lw.mlp_norm, lw.mlp_norm_b), lw)
        h = h + (m if lw.mlp_out_norm is None else norm(m, lw.mlp_out_norm))
    out = norm(h, model.final_norm, model.final_norm_b) @ f(model.lm_head).T
    out = out * (1.0 if cfg.logit_scale is None else np.float32(cfg.logit_scale))
    c = cfg.final_softcap
    return out if c is None else c * np.tanh(out / c)

HF_LAYER = {"attn_norm": "input_layernorm", "wq": "self_attn.q_proj", "wk": "self_attn.k_proj",
            "wv": "self_attn.v_proj", "wo": "self_attn.o_proj", "mlp_norm": "post_attention_layernorm",
            "w_gate": "mlp.gate_proj", "w_up": "mlp.up_proj", "w_down": "mlp.down_proj"}

def hf_config(cfg, model_type="mistral", **extra):
    """A config.json for ``cfg``, written as transformers 5.x would for ``model_type``; ``extra`` keys win."""
    out = {"architectures": [HF_CLASSES[model_type]], "model_type": model_type, "hidden_act": "silu",
           "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
           "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
           "num_key_value_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim, "sliding_window": cfg.windows[0],
           "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
           "rms_norm_eps": cfg.rms_norm_eps, "tie_word_embeddings": cfg.tie_word_embeddings,
           "eos_token_id": 2, "bos_token_id": 1}
    if model_type == "llama":  # LlamaConfig has no sliding_window (save_pretrained writes none)
        del out["sliding_window"]
    return dict(out, **extra)

HF_CLASSES = {"mistral": "MistralForCausalLM", "ministral": "MinistralForCausalLM", "llama": "LlamaForCausalLM",
              "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "starcoder2": "Starcoder2ForCausalLM",
              "phi3": "Phi3ForCausalLM", "mixtral": "MixtralForCausalLM", "gemma3_text": "Gemma3ForCausalLM",
              "cohere2": "Cohere2ForCausalLM", "olmo3": "Olmo3ForCausalLM", "gemma2": "Gemma2ForCausalLM",
              "gpt_oss": "GptOssForCausalLM"}

# The optional tensors (biases, Qwen3's q/k norms), by transformers' names.
HF_OPTIONAL = {"bq": "self_attn.q_proj.bias", "bk": "self_attn.k_proj.bias", "bv": "self_attn.v_proj.bias",
               "bo": "self_attn.o_proj.bias", "b_gate": "mlp.gate_proj.bias", "b_up": "mlp.up_proj.bias",
               "b_down": "mlp.down_proj.bias", "q_norm": "self_attn.q_norm.weight",
               "k_norm": "self_attn.k_norm.weight", "attn_norm_b": "input_layernorm.bias",
               "mlp_norm_b": "post_attention_layernorm.bias", "attn_out_norm": "post_attention_layernorm.weight",
               "mlp_out_norm": "post_feedforward_layernorm.weight", "router": "block_sparse_moe.gate.weight",
               "experts_gate": "block_sparse_moe.experts.{e}.w1.weight",
               "experts_up": "block_sparse_moe.experts.{e}.w3.weight",
               "experts_down": "block_sparse_moe.experts.{e}.w2.weight", "sinks": "self_attn.sinks"}

def present(lw):
    """name -> array for every tensor a LayerWeights holds (the optional ones that are None left out)."""
    return {n: getattr(lw, n) for n in M.LAYER_TENSORS if getattr(lw, n) is not None}

# Tensor names that differ per family, spelled out from transformers 5.24.0's modelling files.
FAMILY_NAMES = {
    "starcoder2": {"w_up": "mlp.c_fc.weight", "b_up": "mlp.c_fc.bias", "w_down": "mlp.c_proj.weight",
                   "b_down": "mlp.c_proj.bias"},
    "gemma3_text": {"attn_out_norm": "post_attention_layernorm.weight", "mlp_norm": "pre_feedforward_layernorm.weight"},
    "gemma2": {"attn_out_norm": "post_attention_layernorm.weight", "mlp_norm": "pre_feedforward_layernorm.weight"},
    "gpt_oss": {"router": "mlp.router.weight", "b_router": "mlp.router.bias"},
}
# Phi-3 stores q/k/v in one qkv_proj and gate/up in one gate_up_proj (rows concatenated in that order).
PHI3_FUSED = {"self_attn.qkv_proj.weight": ("wq", "wk", "wv"), "mlp.gate_up_proj.weight": ("w_gate", "w_up")}
GEMMA_NORMS = ("attn_norm", "attn_out_norm", "mlp_norm", "mlp_out_norm", "q_norm", "k_norm")

def gpt_oss_experts(lw):
    """GptOssExperts' four tensors: [E, d, 2I] with gate in the even and up in the odd columns, [E, 2I],
    [E, I, d] (each matrix stored [in, out]) and [E, d]."""
    E, I, d = lw.experts_gate.shape
    gate_up = np.empty((E, d, 2 * I), np.float32)
    gate_up[..., 0::2], gate_up[..., 1::2] = lw.experts_gate.transpose(0, 2, 1), lw.experts_up.transpose(0, 2, 1)
    bias = np.empty((E, 2 * I), np.float32)
    bias[:, 0::2], bias[:, 1::2] = lw.b_experts_gate, lw.b_experts_up
    return {"mlp.experts.gate_up_proj": gate_up, "mlp.experts.gate_up_proj_bias": bias,
            "mlp.experts.down_proj": np.ascontiguousarray(lw.experts_down.transpose(0, 2, 1)),
            "mlp.experts.down_proj_bias": lw.b_experts_down}

GPT_OSS_PACKED = ("experts_gate", "experts_up", "experts_down", "b_experts_gate", "b_experts_up", "b_experts_down")

def hf_tensors(model, model_type="mistral"):
    """The tensors of a transformers checkpoint of ``model`` for ``model_type`` (Gemma's norms stored as w - 1)."""
    gemma = model_type in ("gemma3_text", "gemma2")
    t = {"model.embed_tokens.weight": model.embed, "model.norm.weight": model.final_norm - gemma}
    if model.final_norm_b is not None:
        t["model.norm.bias"] = model.final_norm_b
    if not model.config.tie_word_embeddings:
        t["lm_head.weight"] = model.lm_head
    names = {**{k: v + ".weight" for k, v in HF_LAYER.items()}, **HF_OPTIONAL, **FAMILY_NAMES.get(model_type, {})}
    fused = PHI3_FUSED if model_type == "phi3" else {}
    for i, lw in enumerate(model.layers):
        for name, keys in fused.items():
            t[f"model.layers.{i}.{name}"] = np.concatenate([getattr(lw, k) for k in keys])
        if model_type == "gpt_oss":
            t.update({f"model.layers.{i}.{name}": arr for name, arr in gpt_oss_experts(lw).items()})
        for key, name in names.items():
            arr = getattr(lw, key)
            if arr is None or any(key in keys for keys in fused.values()) or \
                    model_type == "gpt_oss" and key in GPT_OSS_PACKED:
                continue
            arr = arr - 1 if gemma and key in GEMMA_NORMS else arr
            for e in range(arr.shape[0] if "{e}" in name else 1):
                t[f"model.layers.{i}.{name.format(e=e)}"] = arr[e] if "{e}" in name else arr
    return t

def write_bf16_safetensors(path, tensors):
    """A safetensors file written byte by byte (the format: u64 header length, JSON, raw data)."""
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        raw = (np.ascontiguousarray(arr, dtype=np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))

def write_checkpoint(d, model, config=None, tensors=None, dtype=np.float32, shards=1):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config if config is not None else hf_config(model.config), f)
    tensors = tensors if tensors is not None else hf_tensors(model)
    if dtype == "bf16":
        write_bf16_safetensors(os.path.join(d, "model.safetensors"), tensors)
        return d
    tensors = {k: np.ascontiguousarray(v, dtype=dtype) if v.dtype.kind == "f" else v for k, v in tensors.items()}
    if shards == 1:
        safetensors_numpy.save_file(tensors, os.path.join(d, "model.safetensors"))
        return d
    names = sorted(tensors)
    wmap = {}
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[s::shards]}
        safetensors_numpy.save_file(part, os.path.join(d, fname))
        wmap.update({n: fname for n in part})
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": wmap}, f)
    return d

def same_weights(a, b, atol=0.0):
    assert a.config.windows == b.config.windows and a.config.head_dim == b.config.head_dim
    assert_close(a.embed, b.embed, atol=atol, name="embed")
    assert_close(a.lm_head, b.lm_head, atol=atol, name="lm_head")
    for i, (x, y) in enumerate(zip(a.layers, b.layers)):
        assert present(x).keys() == present(y).keys()
        for n, arr in present(x).items():
            assert_close(arr, getattr(y, n), atol=atol, name=f"layer {i} {n}")

# The matrices a decode step reads, in its order (q, k, v, o, then the MLP: dense, or router + experts
# and, gpt-oss, the experts' biases, which are [E, I] / [E, d]: matrices too).
DECODE_ORDER = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down", "router", "experts_gate", "experts_up",
                "experts_down", "b_experts_gate", "b_experts_up", "b_experts_down")


def assert_packed(model):
    """Every matrix of model in one buffer: the embedding, each layer's in DECODE_ORDER, the LM head
    (untied), each one 4 KiB page after the previous one's end rounded up to 4 KiB, the first
    2 MiB-aligned (a huge page)."""
    mats = [("embed", model.embed)]
    mats += [(f"layers[{i}].{n}", getattr(lw, n)) for i, lw in enumerate(model.layers) for n in DECODE_ORDER
             if getattr(lw, n) is not None]
    if model.lm_head is not model.embed:
        mats.append(("lm_head", model.lm_head))
    assert mats[0][1].ctypes.data % (2 << 20) == 0, f"embed at {mats[0][1].ctypes.data:#x}: not 2 MiB-aligned"
    for (name, a), (nxt, b) in zip(mats, mats[1:]):
        assert a.flags.c_contiguous, name
        want = a.ctypes.data + -(-a.nbytes // 4096) * 4096
        assert b.ctypes.data == want, f"{nxt} at {b.ctypes.data:#x}, expected right after {name}: {want:#x}"
    return len(mats)

MISTRAL_LAYER = {"attn_norm": "attention_norm", "wq": "attention.wq", "wk": "attention.wk", "wv": "attention.wv",
                 "wo": "attention.wo", "mlp_norm": "ffn_norm", "w_gate": "feed_forward.w1",
                 "w_up": "feed_forward.w3", "w_down": "feed_forward.w2"}

def write_mistral_native(d, model, params):
    """Mistral's own layout: params.json + consolidated.safetensors (interleaved RoPE)."""
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "params.json"), "w") as f:
        json.dump(params, f)
    t = {"tok_embeddings.weight": model.embed, "norm.weight": model.final_norm, "output.weight": model.lm_head}
    for i, lw in enumerate(model.layers):
        for key, name in MISTRAL_LAYER.items():
            t[f"layers.{i}.{name}.weight"] = getattr(lw, key)
    safetensors_numpy.save_file(t, os.path.join(d, "consolidated.safetensors"))
    return d

def backend_missing():
    try:
        import swaref._backend  # noqa: F401
        return None
    except ImportError as e:
        return f"swaref._backend is not importable ({e}); the compiled backend is not built"
