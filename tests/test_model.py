"""The Mistral-architecture model, sampling and checkpoint loader (no torch needed).

The independent computation here is ``oracle_logits``: a dense float64
forward pass written from the formulas (complex-number RoPE, a dense masked
softmax from tests/oracle.py, GQA by repeating K/V), sharing no code with
swaref.model.  swaref's chunked / cached / batched paths must all agree with it.
"""
import json
import os
import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from oracle import assert_close, dense_attention_f64

from swaref import model as M
from swaref import sampling as S
from swaref.errors import SwarefError

from swaref import checkpoint as C

try:
    import safetensors.numpy as safetensors_numpy
except ImportError:  # pragma: no cover - the test extra installs it
    safetensors_numpy = None
needs_safetensors = pytest.mark.skipif(safetensors_numpy is None, reason="the loader tests need the 'safetensors' "
                                                                          "package (pip install swaref[test])")


def make_cfg(window=4, n_layers=2, hidden=32, n_heads=4, n_kv=2, head_dim=8, vocab=61, inter=48,
             layout="half", tie=False, eos=()):
    return M.ModelConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, n_layers=n_layers,
                         n_heads=n_heads, n_kv_heads=n_kv, head_dim=head_dim, window=window,
                         rope_theta=10000.0, rms_norm_eps=1e-5, rope_layout=layout, tie_word_embeddings=tie,
                         eos_token_ids=eos)


# Scale 1.5 makes attention peaked, so a key let in or left out moves the logits far beyond the tolerance.
def make_model(seed=0, scale=1.5, **kw):
    return M.random_model(make_cfg(**kw), seed=seed, scale=scale)


# ------------------------------------------------------------------- the oracle

def oracle_rope(x, positions, theta, layout):
    """x [T, H, D] float64 rotated by multiplying complex pairs by exp(i * p * theta^(-2k/D))."""
    T, H, D = x.shape
    k = np.arange(D // 2)
    ang = np.asarray(positions, dtype=np.float64)[:, None, None] * theta ** (-2.0 * k / D)
    if layout == "half":
        z = (x[..., : D // 2] + 1j * x[..., D // 2:]) * np.exp(1j * ang)
        return np.concatenate([z.real, z.imag], axis=-1)
    z = (x[..., 0::2] + 1j * x[..., 1::2]) * np.exp(1j * ang)
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


def oracle_logits(model, tokens):
    """Dense float64 forward of the whole sequence at positions 0..T-1 -> [T, V]."""
    cfg = model.config
    f = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    T = len(tokens)
    pos = np.arange(T)

    def norm(x, w):
        return f(w) * x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + cfg.rms_norm_eps)

    h = f(model.embed)[np.asarray(tokens)]
    for lw, w in zip(model.layers, cfg.windows):
        x = norm(h, lw.attn_norm)
        q = (x @ f(lw.wq).T).reshape(T, cfg.n_heads, cfg.head_dim)
        k = (x @ f(lw.wk).T).reshape(T, cfg.n_kv_heads, cfg.head_dim)
        v = (x @ f(lw.wv).T).reshape(T, cfg.n_kv_heads, cfg.head_dim)
        q = oracle_rope(q, pos, cfg.rope_theta, cfg.rope_layout)
        k = oracle_rope(k, pos, cfg.rope_theta, cfg.rope_layout)
        a = dense_attention_f64(q, k, v, pos, pos, w).reshape(T, -1)
        h = h + a @ f(lw.wo).T
        x = norm(h, lw.mlp_norm)
        g = x @ f(lw.w_gate).T
        h = h + ((g / (1 + np.exp(-g))) * (x @ f(lw.w_up).T)) @ f(lw.w_down).T
    return norm(h, model.final_norm) @ f(model.lm_head).T


# ---------------------------------------------------------------- the pieces

@settings(max_examples=25)
@given(st.integers(1, 6), st.sampled_from([2, 4, 8, 16]), st.sampled_from(["half", "interleaved"]),
       st.integers(0, 10 ** 6), st.integers(0, 2 ** 31))
def test_rope_matches_complex_rotation(T, D, layout, p0, seed):
    x = np.random.default_rng(seed).standard_normal((T, 3, D)).astype(np.float32)
    pos = np.arange(p0, p0 + T)
    got = M.apply_rope(x, pos, 10000.0, layout)
    assert got.dtype == np.float32
    assert_close(got, oracle_rope(x.astype(np.float64), pos, 10000.0, layout), atol=2e-6 * (1 + np.abs(x).max()))


@settings(max_examples=25)
@given(st.integers(0, 5000), st.integers(0, 5000), st.integers(0, 5000), st.sampled_from(["half", "interleaved"]),
       st.integers(0, 2 ** 31))
def test_rope_scores_depend_only_on_distance(p, j, shift, layout, seed):
    rng = np.random.default_rng(seed)
    q, k = rng.standard_normal((2, 1, 1, 16)).astype(np.float32)
    s1 = float(np.sum(M.apply_rope(q, [p], 1e4, layout) * M.apply_rope(k, [j], 1e4, layout)))
    s2 = float(np.sum(M.apply_rope(q, [p + shift], 1e4, layout) * M.apply_rope(k, [j + shift], 1e4, layout)))
    assert abs(s1 - s2) < 1e-4 * (1 + abs(s1)), (s1, s2)


def test_rope_layouts_differ_and_permutation_maps_one_to_the_other():
    # A model in Mistral's interleaved layout equals the rotate-half model with permuted Q/K rows.
    inter = make_model(seed=3, layout="interleaved")
    cfg_half = make_cfg(layout="half")
    layers = []
    for lw in inter.layers:
        arrays = {n: getattr(lw, n) for n in M.LayerWeights.NAMES}
        arrays["wq"] = M.interleaved_to_half(lw.wq, cfg_half.n_heads, cfg_half.head_dim)
        arrays["wk"] = M.interleaved_to_half(lw.wk, cfg_half.n_kv_heads, cfg_half.head_dim)
        assert np.array_equal(M.half_to_interleaved(arrays["wq"], cfg_half.n_heads, cfg_half.head_dim), lw.wq)
        layers.append(M.LayerWeights(**arrays))
    half = M.Model(cfg_half, inter.embed, layers, inter.final_norm, inter.lm_head)
    toks = np.arange(11) % 61
    a = M.prefill_prompt(inter, toks, M.new_caches(inter, 11), logits="all")
    b = M.prefill_prompt(half, toks, M.new_caches(half, 11), logits="all")
    assert_close(a, b, atol=1e-5)
    unpermuted = M.Model(cfg_half, inter.embed, inter.layers, inter.final_norm, inter.lm_head)
    c = M.prefill_prompt(unpermuted, toks, M.new_caches(half, 11), logits="all")
    assert np.abs(a - c).max() > 1e-2, "the two layouts should differ on the same weights"


def test_rms_norm_matches_formula():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 24)).astype(np.float32) * 3
    w = rng.standard_normal(24).astype(np.float32)
    x64 = x.astype(np.float64)
    want = w * x64 / np.sqrt((x64 ** 2).mean(-1, keepdims=True) + 1e-6)
    assert_close(M.rms_norm(x, w, 1e-6), want, atol=1e-5)


def test_silu_is_stable():
    x = np.array([-1000.0, -5.0, 0.0, 5.0, 1000.0], dtype=np.float32)
    from scipy.special import expit
    assert_close(M.silu(x), x.astype(np.float64) * expit(x.astype(np.float64)), atol=1e-5)


# ------------------------------------------------------ the model vs the oracle

WINDOWS = [1, 3, 4, None, [3, None], [None, 2]]


@pytest.mark.parametrize("window", WINDOWS, ids=str)
def test_prefill_logits_match_dense_oracle(window):
    model = make_model(window=window, seed=7)
    toks = np.random.default_rng(2).integers(0, 61, 17)
    got = M.prefill_prompt(model, toks, M.new_caches(model, 17), logits="all")
    assert got.dtype == np.float32
    assert_close(got, oracle_logits(model, toks), atol=1e-4)


def test_oracle_sees_a_window_off_by_one():
    # Control: the comparison above can fail.  W = 4 and W = 5 give clearly different logits.
    toks = np.random.default_rng(2).integers(0, 61, 17)
    m4, m5 = make_model(window=4, seed=7), make_model(window=5, seed=7)
    diff = np.abs(oracle_logits(m4, toks) - oracle_logits(m5, toks))
    assert diff[:4].max() < 1e-9 and diff[4:].max() > 1e-2


@settings(max_examples=20)
@given(st.sampled_from([1, 2, 3, 5, None]), st.integers(1, 20), st.data())
def test_any_chunk_schedule_gives_the_same_logits(window, T, data):
    model = make_model(window=window, seed=11, n_layers=2)
    toks = np.random.default_rng(T).integers(0, 61, T)
    sched = []
    while sum(sched) < T:
        sched.append(data.draw(st.integers(1, T - sum(sched)), label="chunk"))
    whole = M.prefill_prompt(model, toks, M.new_caches(model, T), chunk_size=T, logits="all")
    chunked = M.prefill_prompt(model, toks, M.new_caches(model, T), chunk_size=sched, logits="all")
    caches = M.new_caches(model, T)
    one_by_one = np.concatenate([M.forward(model, toks[i:i + 1], caches) for i in range(T)])
    assert_close(chunked, whole, atol=2e-5, name=f"schedule {sched}")
    assert_close(one_by_one, whole, atol=2e-5, name="token by token (decode_step)")


def test_greedy_generation_equals_rescoring_the_whole_sequence():
    model = make_model(window=[3, None, 4], n_layers=3, seed=5)
    prompt = np.random.default_rng(4).integers(0, 61, 9)
    res = M.generate(model, [prompt], max_new_tokens=25, chunk_size=2)
    gen = res.tokens[0]
    assert len(gen) == 25 and res.decode_tokens == 24
    full = oracle_logits(model, np.concatenate([prompt, gen]))
    for i, t in enumerate(gen):
        row = full[len(prompt) - 1 + i]
        top2 = np.sort(row)[-2:]
        if top2[1] - top2[0] > 1e-3:  # a near tie could go either way in float32
            assert t == int(np.argmax(row)), f"token {i}: generated {t}, oracle argmax {int(np.argmax(row))}"


def test_batch_of_prompts_equals_one_by_one():
    model = make_model(window=4, seed=9)
    rng = np.random.default_rng(8)
    prompts = [rng.integers(0, 61, n) for n in (1, 4, 5, 13)]
    batch = M.generate(model, prompts, max_new_tokens=12).tokens
    alone = [M.generate(model, [p], max_new_tokens=12).tokens[0] for p in prompts]
    assert batch == alone
    params = S.SamplingParams(temperature=0.8, top_p=0.9, seed=123)
    sampled = M.generate(model, prompts, max_new_tokens=8, sample=S.make_sampler(params)).tokens
    assert sampled == M.generate(model, prompts, max_new_tokens=8, sample=S.make_sampler(params)).tokens
    # Sequence b draws from the stream (seed, b), whatever runs beside it.
    solo0 = M.generate(model, prompts[:1], max_new_tokens=8, sample=S.make_sampler(params)).tokens[0]
    assert solo0 == sampled[0]


@settings(max_examples=15)
@given(st.lists(st.integers(1, 14), min_size=1, max_size=4), st.sampled_from([2, 5, None, [3, None]]),
       st.integers(0, 2 ** 31))
def test_packed_forward_equals_each_sequence_alone(lengths, window, seed):
    model = make_model(window=window, seed=12)
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(0, 61, n) for n in lengths]
    nxt = [rng.integers(0, 61, 1 + n % 3) for n in lengths]
    packed_caches = [M.new_caches(model, 20) for _ in prompts]
    first = M.forward_packed(model, prompts, packed_caches, logits="all")
    second = M.forward_packed(model, nxt, packed_caches, logits="all")
    for b, (p, q) in enumerate(zip(prompts, nxt)):
        alone = M.new_caches(model, 20)
        assert_close(first[b], M.forward(model, p, alone), atol=2e-5, name=f"sequence {b} prompt")
        assert_close(second[b], M.forward(model, q, alone), atol=2e-5, name=f"sequence {b} continuation")


def test_generation_stops_on_eos():
    model = make_model(window=4, seed=9)
    prompt = [3, 1, 4, 1, 5]
    free = M.generate(model, [prompt], max_new_tokens=10).tokens[0]
    eos = free[3]
    stop = free.index(eos) + 1
    cfg = make_cfg(window=4, eos=(eos,))
    model_eos = M.Model(cfg, model.embed, model.layers, model.final_norm, model.lm_head)
    res = M.generate(model_eos, [prompt], max_new_tokens=10)
    assert res.tokens[0] == free[:stop] and res.finished_by_eos == [True]
    res = M.generate(model_eos, [prompt], max_new_tokens=10, stop_on_eos=False)
    assert res.tokens[0] == free and res.finished_by_eos == [False]


def test_sliding_cache_memory_does_not_grow_with_the_prompt():
    model = make_model(window=[4, None], seed=1)
    bytes_ = []
    for T in (5, 50):
        caches = M.new_caches(model, T)
        M.prefill_prompt(model, np.zeros(T, dtype=np.int64), caches)
        bytes_.append((caches[0].nbytes, caches[1].nbytes))
    assert bytes_[0][0] == bytes_[1][0] == 4 * (2 * 2 * 8 * 4 + 8)       # W slots: k, v float32 + int64 position
    assert bytes_[1][1] == 50 * (2 * 2 * 8 * 4 + 8)                      # full attention keeps everything


# ------------------------------------------------------------------ bad input

def test_bad_input_is_rejected_before_any_cache_changes():
    model = make_model(window=[4, None], seed=1)
    caches = M.new_caches(model, 6)
    M.prefill_prompt(model, [1, 2, 3], caches)
    snap = [(c.k.copy(), c.positions.copy(), c.n_seen) for c in caches]
    with pytest.raises(SwarefError, match="outside the vocabulary"):
        M.forward(model, [1, 61], caches)
    with pytest.raises(SwarefError, match="cannot take 4 more"):
        M.forward(model, [1, 2, 3, 4], caches)
    with pytest.raises(SwarefError, match="backend"):
        M.forward(model, [1], caches, backend="gpu")
    with pytest.raises(SwarefError, match="different positions"):
        M.forward(model, [1], [caches[0], M.new_caches(model, 6)[1]])
    with pytest.raises(SwarefError, match="2 caches"):
        M.forward(model, [1], caches[:1])
    with pytest.raises(SwarefError, match="chunk_size must be an int >= 1"):
        M.prefill_prompt(model, [1, 2], caches, chunk_size=0)
    for c, (k, p, n) in zip(caches, snap):
        assert np.array_equal(c.k, k) and np.array_equal(c.positions, p) and c.n_seen == n


@pytest.mark.parametrize("kw,match", [
    (dict(n_heads=3), "multiple of n_kv_heads"), (dict(head_dim=7), "even"), (dict(vocab=0), "vocab_size"),
    (dict(window=[4]), "2 entries"), (dict(window=0), "window"), (dict(layout="complex"), "rope_layout"),
    (dict(eos=(61,)), "eos_token_ids")])
def test_bad_config_is_rejected(kw, match):
    with pytest.raises(SwarefError, match=match):
        make_cfg(**kw)


# -------------------------------------------------------------------- sampling

def test_top_p_keeps_the_smallest_nucleus():
    p = np.array([0.1, 0.4, 0.05, 0.3, 0.15])
    for top_p, keep in [(0.35, {1}), (0.4, {1}), (0.41, {1, 3}), (0.7, {1, 3}), (0.85, {1, 3, 4}), (1.0, set(range(5)))]:
        got = S.top_p_filter(p, top_p)
        assert set(np.nonzero(got)[0]) == keep, (top_p, got)
        assert abs(got.sum() - 1) < 1e-12
        assert_close(got[list(keep)], p[list(keep)] / p[list(keep)].sum(), atol=1e-12)


def test_sampling_is_seeded_and_follows_the_distribution():
    logits = np.log(np.array([0.5, 0.3, 0.2, 1e-9]))
    def draw(seed, n):
        rng = np.random.default_rng(seed)
        return [S.sample(logits, rng, 1.0) for _ in range(n)]
    assert draw(5, 30) == draw(5, 30) != draw(6, 30)
    rng = np.random.default_rng(42)
    counts = np.bincount([S.sample(logits, rng, 1.0) for _ in range(4000)], minlength=4) / 4000
    assert np.abs(counts - [0.5, 0.3, 0.2, 0.0]).max() < 0.03, counts
    rng = np.random.default_rng(42)
    assert {S.sample(logits, rng, 1.0, top_p=0.45) for _ in range(200)} == {0}
    assert S.sample(logits, None, temperature=0.0) == 0 == S.greedy(logits)
    with pytest.raises(SwarefError, match="top_p"):
        S.sample(logits, rng, 1.0, top_p=0.0)
    with pytest.raises(SwarefError, match="temperature"):
        S.SamplingParams(temperature=-1)
    with pytest.raises(SwarefError, match="NaN"):
        S.greedy(np.array([0.0, np.nan]))


# ------------------------------------------------------------------ checkpoints

HF_LAYER = {"attn_norm": "input_layernorm", "wq": "self_attn.q_proj", "wk": "self_attn.k_proj",
            "wv": "self_attn.v_proj", "wo": "self_attn.o_proj", "mlp_norm": "post_attention_layernorm",
            "w_gate": "mlp.gate_proj", "w_up": "mlp.up_proj", "w_down": "mlp.down_proj"}


def hf_config(cfg):
    return {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_act": "silu",
            "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
            "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
            "num_key_value_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim, "sliding_window": cfg.windows[0],
            "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
            "rms_norm_eps": cfg.rms_norm_eps, "tie_word_embeddings": cfg.tie_word_embeddings,
            "eos_token_id": 2, "bos_token_id": 1}


def hf_tensors(model):
    t = {"model.embed_tokens.weight": model.embed, "model.norm.weight": model.final_norm}
    if not model.config.tie_word_embeddings:
        t["lm_head.weight"] = model.lm_head
    for i, lw in enumerate(model.layers):
        for key, hf in HF_LAYER.items():
            t[f"model.layers.{i}.{hf}.weight"] = getattr(lw, key)
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
        for n in M.LayerWeights.NAMES:
            assert_close(getattr(x, n), getattr(y, n), atol=atol, name=f"layer {i} {n}")


@needs_safetensors
@pytest.mark.parametrize("dtype,shards,tie", [(np.float32, 1, False), (np.float16, 1, False), ("bf16", 1, False),
                                              (np.float32, 3, False), (np.float32, 1, True)])
def test_checkpoint_round_trip(tmp_path, dtype, shards, tie):
    model = make_model(seed=2, tie=tie)
    if dtype == "bf16":  # values exactly representable in bfloat16, so the round trip is exact
        for lw in model.layers:
            for n in M.LayerWeights.NAMES:
                getattr(lw, n).view(np.uint32)[...] &= 0xFFFF0000
        for a in (model.embed, model.final_norm, model.lm_head):
            a.view(np.uint32)[...] &= 0xFFFF0000
    if dtype == np.float16:
        model = M.Model(model.config, model.embed.astype(np.float16).astype(np.float32),
                        [M.LayerWeights(**{n: getattr(lw, n).astype(np.float16).astype(np.float32)
                                           for n in M.LayerWeights.NAMES}) for lw in model.layers],
                        model.final_norm.astype(np.float16).astype(np.float32),
                        model.lm_head.astype(np.float16).astype(np.float32))
    loaded = C.load_model(write_checkpoint(str(tmp_path), model, dtype=dtype, shards=shards))
    same_weights(loaded, model)
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
    ("yarn", lambda c: c.update(rope_parameters={"rope_type": "yarn", "rope_theta": 1e4}), None, "yarn"),
    ("act", lambda c: c.update(hidden_act="gelu"), None, "hidden_act"),
    ("missing_field", lambda c: c.pop("hidden_size"), None, "hidden_size"),
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
    with pytest.raises(C.CheckpointError, match=match):
        C.load_model(d)


@needs_safetensors
def test_missing_files(tmp_path):
    model = make_model(seed=2)
    with pytest.raises(C.CheckpointFileError, match="does not exist"):
        C.load_model(str(tmp_path / "nowhere"))
    d = write_checkpoint(str(tmp_path / "a"), model)
    os.remove(os.path.join(d, "config.json"))
    with pytest.raises(C.CheckpointFileError, match="config.json"):
        C.load_model(d)
    d = write_checkpoint(str(tmp_path / "b"), model)
    os.remove(os.path.join(d, "model.safetensors"))
    with pytest.raises(C.CheckpointFileError, match="neither model.safetensors"):
        C.load_model(d)
    d = write_checkpoint(str(tmp_path / "c"), model, shards=2)
    os.remove(os.path.join(d, "model-00002-of-00002.safetensors"))
    with pytest.raises(C.CheckpointFileError, match="00002-of-00002"):
        C.load_model(d)
    d = write_checkpoint(str(tmp_path / "e"), model)
    with open(os.path.join(d, "model.safetensors"), "r+b") as f:
        f.truncate(100)
    with pytest.raises(C.CheckpointError, match="not a readable safetensors"):
        C.load_model(d)


@needs_safetensors
def test_layer_types_give_per_layer_windows(tmp_path):
    model = make_model(window=[4, None], seed=2)
    cfg = hf_config(model.config)
    cfg["layer_types"] = ["sliding_attention", "full_attention"]
    loaded = C.load_model(write_checkpoint(str(tmp_path), model, cfg))
    assert loaded.config.windows == (4, None)


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


@needs_safetensors
def test_mistral_native_checkpoint_equals_its_hf_conversion(tmp_path):
    # The same model in both layouts: native (interleaved RoPE) and HF (rotate-half, Q/K rows permuted
    # the way transformers' converter does).  Both loads must give the same logits.
    native = make_model(seed=8, layout="interleaved", window=[3, None])
    cfg = native.config
    params = {"dim": cfg.hidden_size, "n_layers": cfg.n_layers, "head_dim": cfg.head_dim, "hidden_dim":
              cfg.intermediate_size, "n_heads": cfg.n_heads, "n_kv_heads": cfg.n_kv_heads, "norm_eps": cfg.rms_norm_eps,
              "vocab_size": cfg.vocab_size, "sliding_window": [3, None], "rope_theta": cfg.rope_theta}
    a = C.load_model(write_mistral_native(str(tmp_path / "native"), native, params))
    assert a.config.rope_layout == "interleaved" and a.config.windows == (3, None)
    same_weights(a, native)
    layers = []
    for lw in native.layers:
        arrays = {n: getattr(lw, n) for n in M.LayerWeights.NAMES}
        arrays["wq"] = M.interleaved_to_half(lw.wq, cfg.n_heads, cfg.head_dim)
        arrays["wk"] = M.interleaved_to_half(lw.wk, cfg.n_kv_heads, cfg.head_dim)
        layers.append(M.LayerWeights(**arrays))
    hf = M.Model(make_cfg(window=[3, None]), native.embed, layers, native.final_norm, native.lm_head)
    hf_cfg = hf_config(hf.config)
    hf_cfg["layer_types"] = ["sliding_attention", "full_attention"]
    hf_cfg["sliding_window"] = 3
    b = C.load_model(write_checkpoint(str(tmp_path / "hf"), hf, hf_cfg))
    toks = np.arange(13) % 61
    la = M.prefill_prompt(a, toks, M.new_caches(a, 13), logits="all")
    lb = M.prefill_prompt(b, toks, M.new_caches(b, 13), logits="all")
    assert_close(la, lb, atol=1e-5)
    assert_close(la, oracle_logits(native, toks), atol=1e-4)
    del params["rope_theta"]
    d = write_mistral_native(str(tmp_path / "no_theta"), native, params)
    with pytest.raises(C.CheckpointError, match="no rope_theta; pass it explicitly"):
        C.load_model(d)
    assert C.load_model(d, rope_theta=1e6).config.rope_theta == 1e6
    os.remove(os.path.join(d, "consolidated.safetensors"))
    with pytest.raises(C.CheckpointFileError, match="consolidated.safetensors"):
        C.load_model(d, rope_theta=1e4)


# ------------------------------------------------------------ compiled backend

def _backend_missing():
    try:
        import swaref._backend  # noqa: F401
        return None
    except ImportError as e:
        return f"swaref._backend is not importable ({e}); the compiled backend is not built"


@pytest.mark.skipif(_backend_missing() is not None, reason=str(_backend_missing()))
@pytest.mark.parametrize("window", [3, [4, None]], ids=str)
def test_cython_backend_gives_the_same_model_output(window):
    model = make_model(window=window, seed=4)
    toks = np.random.default_rng(3).integers(0, 61, 14)
    ref = M.prefill_prompt(model, toks, M.new_caches(model, 30), chunk_size=5, logits="all")
    cy = M.prefill_prompt(model, toks, M.new_caches(model, 30), chunk_size=5, logits="all", backend="cython")
    assert_close(cy, ref, atol=1e-4)
    g_ref = M.generate(model, [toks, toks[:5]], max_new_tokens=12).tokens
    g_cy = M.generate(model, [toks, toks[:5]], max_new_tokens=12, backend="cython").tokens
    assert g_ref == g_cy


# --------------------------------------------------------------------- the CLI

def test_generate_cli_tiny_runs_and_says_noise(capsys):
    from swaref.cli import main
    rc = main(["generate", "--tiny", "--prompt", "hello sliding window", "--max-new-tokens", "6", "--seed", "1"])
    out = capsys.readouterr()
    assert rc == 0
    text = out.out + out.err
    assert "noise" in text and "prefill" in text and "decode" in text and "cache" in text


def test_generate_cli_tiny_defaults_to_the_tutorial_prompt_and_model_needs_one(capsys, tmp_path):
    from swaref.cli import main
    assert main(["generate", "--tiny", "--max-new-tokens", "2"]) == 0
    # The byte-level codec gives one token per byte of the tutorial's 49-character sentence.
    assert "prompt 49 tokens" in capsys.readouterr().err
    assert main(["generate", "--model", str(tmp_path)]) == 2
    assert "--prompt is required with --model" in capsys.readouterr().err


def test_generate_cli_long_prompt_draws_a_progress_bar(capsys):
    from swaref.cli import main
    assert main(["generate", "--tiny", "--prompt", "x" * 40, "--max-new-tokens", "2", "--chunk-size", "8"]) == 0
    err = capsys.readouterr().err
    assert "prefill [" in err and "40/40 tokens" in err


@needs_safetensors
def test_generate_cli_with_a_checkpoint_and_tokenizer(tmp_path, capsys):
    tokenizers = pytest.importorskip("tokenizers", reason="needs the 'tokenizers' package (pip install swaref[model])")
    from swaref.cli import main
    model = make_model(seed=6)
    d = write_checkpoint(str(tmp_path), model)
    words = [f"w{i}" for i in range(61)]
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="w0"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.decoder = tokenizers.decoders.WordPiece()  # joins tokens with spaces
    tok.save(os.path.join(d, "tokenizer.json"))
    prompt = "w5 w17 w3 w44 w9"
    assert main(["generate", "--model", d, "--prompt", prompt, "--max-new-tokens", "7", "--no-stop"]) == 0
    out = capsys.readouterr().out.split()
    want = M.generate(model, [[5, 17, 3, 44, 9]], max_new_tokens=7, stop_on_eos=False).tokens[0]
    assert out == [words[t] for t in want]
    os.remove(os.path.join(d, "tokenizer.json"))
    assert main(["generate", "--model", d, "--prompt", "5 17 3 44 9", "--max-new-tokens", "7", "--no-stop"]) == 0
    assert [int(x) for x in capsys.readouterr().out.split()] == want
    assert main(["generate", "--model", d, "--prompt", "hello", "--max-new-tokens", "1"]) == 2
    assert "token ids" in capsys.readouterr().err


def test_generate_cli_reports_a_missing_model(tmp_path, capsys):
    from swaref.cli import main
    rc = main(["generate", "--model", str(tmp_path / "none"), "--prompt", "x"])
    assert rc != 0
    assert "does not exist" in capsys.readouterr().err
