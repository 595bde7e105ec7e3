"""swaref.models.generation: the model's chunked / cached / batched paths against the dense float64 oracle,
and refused calls that leave every cache bitwise unchanged."""
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from model_helpers import HF_LAYER, backend_missing, make_cfg, make_model, oracle_logits, present
from oracle import assert_close

from swaref import models as M
from swaref.cache import RollingBufferCache, load_state
from swaref.errors import SwarefError
from swaref.models import sampling as S


WINDOWS = [1, 3, 4, None, [3, None], [None, 2]]

@pytest.mark.parametrize("window", WINDOWS, ids=str)
def test_prefill_logits_match_dense_oracle(window):
    model = make_model(window=window, seed=7)
    toks = np.random.default_rng(2).integers(0, 61, 17)
    got = M.prefill_prompt(model, toks, M.new_caches(model, 17), logits="all")
    assert got.dtype == np.float32
    assert_close(got, oracle_logits(model, toks), atol=1e-4)

GPT_OSS = dict(mlp="moe", n_experts=4, top_k=2, sinks=True, glu_alpha=1.702, glu_limit=1.0,
               biases=("wq", "wk", "wv", "wo", "router", "experts_gate", "experts_up", "experts_down"))

# Per-family features (Qwen2's q/k/v biases, Llama's o/MLP biases, Qwen3's q/k norms) on mixed windows.
FEATURES = [dict(biases=("wq", "wk", "wv")), dict(biases=("wo", "w_gate", "w_up", "w_down")),
            dict(qk_norm="head"), dict(qk_norm="head", biases=("wq", "wk", "wv", "wo")),
            # Starcoder2: LayerNorm with bias, plain tanh-GELU MLP, biases everywhere
            dict(norm="layer", mlp="plain", act="gelu_tanh", biases=("wq", "wk", "wv", "wo", "w_up", "w_down")),
            # Gemma 3: four norm slots, GeGLU, per-head q/k norms, scales, a local RoPE theta
            dict(norms=("attn", "attn_out", "mlp", "mlp_out"), act="gelu_tanh", qk_norm="head", embed_scale=5.6,
                 attn_scale=0.2, local_rope_theta=100.0),
            # Cohere 2: bias-free LayerNorm, parallel blocks, interleaved RoPE, no RoPE on full layers, logit scale
            dict(norm="layer_nobias", norms=("attn",), parallel=True, layout="interleaved", nope_full=True,
                 logit_scale=0.25),
            # OLMo 3: post-norms only, q/k norms over the projection
            dict(norms=("attn_out", "mlp_out"), qk_norm="all"),
            # Mixtral: top-2 of 4 experts; partial rotary
            dict(mlp="moe", n_experts=4, top_k=2, rope_dim=4),
            # Gemma 2: Gemma's norms and scales with attention and final-logit soft-caps
            dict(norms=("attn", "attn_out", "mlp", "mlp_out"), act="gelu_tanh", embed_scale=5.6, attn_scale=0.2,
                 attn_softcap=2.0, final_softcap=3.0),
            # gpt-oss: learned sinks, biased router and experts, the clamped SwiGLU
            GPT_OSS]

@pytest.mark.parametrize("features", FEATURES, ids=str)
def test_feature_logits_match_dense_oracle_and_each_feature_matters(features):
    model = make_model(window=[3, None], seed=8, **features)
    toks = np.random.default_rng(3).integers(0, 61, 13)
    got = M.prefill_prompt(model, toks, M.new_caches(model, 13), chunk_size=2, logits="all")
    assert_close(got, oracle_logits(model, toks), atol=1e-4)
    # Control: the same weights with Mistral's graph (the features' extra tensors dropped) give other logits.
    if features.get("mlp") == "moe":
        return  # no dense MLP weights to fall back on; test_moe_top_k_matters is its control
    layers = [M.LayerWeights(**{k: getattr(lw, k) if getattr(lw, k) is not None else np.ones(32, np.float32)
                                for k in HF_LAYER if k != "w_gate" or lw.w_gate is not None}) for lw in model.layers]
    if features.get("mlp") == "plain":
        layers = [M.LayerWeights(**dict(present(lw), w_gate=lw.w_up)) for lw in layers]
    bare = M.Model(make_cfg(window=[3, None]), model.embed, layers, model.final_norm, model.lm_head)
    assert np.abs(oracle_logits(bare, toks) - got).max() > 1e-2


def test_moe_top_k_matters():
    model = make_model(window=[3, None], seed=8, mlp="moe", n_experts=4, top_k=2)
    toks = np.random.default_rng(3).integers(0, 61, 13)
    top1 = M.Model(dataclasses.replace(model.config, top_k=1), model.embed, model.layers, model.final_norm,
                   model.lm_head)
    got = M.prefill_prompt(top1, toks, M.new_caches(top1, 13), logits="all")
    assert_close(got, oracle_logits(top1, toks), atol=1e-4)
    assert np.abs(oracle_logits(model, toks) - got).max() > 1e-2

@pytest.mark.parametrize("features,without", [
    (GPT_OSS, dict(sinks=False)), (GPT_OSS, dict(glu_alpha=None, glu_limit=None)),
    (GPT_OSS, dict(biases=("wq", "wk", "wv", "wo"))), (GPT_OSS, dict(biases=())),
    (dict(attn_softcap=2.0), dict(attn_softcap=None)), (dict(final_softcap=3.0), dict(final_softcap=None))],
    ids=["sinks", "clamped-glu", "moe-biases", "attention-biases", "attn-softcap", "final-softcap"])
def test_gemma2_and_gpt_oss_features_each_matter(features, without):
    """Each feature removed alone (its tensors dropped): swaref still equals the oracle for the model without
    it, and that model's logits differ from the one with it, so the oracle comparison above can see it."""
    model = make_model(window=[3, None], seed=8, **features)
    cfg = dataclasses.replace(model.config, **without)
    keep = M.weights.expected_shapes(cfg)[1]
    other = M.Model(cfg, model.embed, [M.LayerWeights(**{k: getattr(lw, k) for k in keep}) for lw in model.layers],
                    model.final_norm, model.lm_head)
    toks = np.random.default_rng(3).integers(0, 61, 13)
    got = M.prefill_prompt(other, toks, M.new_caches(other, 13), chunk_size=2, logits="all")
    assert_close(got, oracle_logits(other, toks), atol=1e-4)
    assert np.abs(oracle_logits(model, toks) - got).max() > 1e-2


def test_model_refuses_non_finite_sinks_and_sinks_with_a_softcap():
    model = make_model(window=[3, None], seed=8, **GPT_OSS)
    bad = [M.LayerWeights(**dict(present(lw), sinks=np.array([0, np.inf, 0, 0], np.float32))) for lw in model.layers]
    with pytest.raises(SwarefError, match="layers\\[0\\].sinks must be finite") as e:
        M.Model(model.config, model.embed, bad, model.final_norm, model.lm_head)
    assert e.value.kind == "sinks"
    with pytest.raises(SwarefError, match="sinks must be false when attn_softcap is given"):
        make_cfg(sinks=True, attn_softcap=2.0)
    with pytest.raises(SwarefError, match="glu_limit must be given together with glu_alpha"):
        make_cfg(glu_alpha=1.7)


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

@pytest.mark.skipif(backend_missing() is not None, reason=str(backend_missing()))
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


# ------------------------------------------ a refused step leaves every cache as it was (issue 8, item 2)

def _fill(model, n, max_len=8, seed=0):
    caches = M.new_caches(model, max_len)
    M.prefill_prompt(model, np.random.default_rng(seed).integers(0, 61, n), caches)
    return caches


def _at(model, last, max_len=8):
    """Caches whose three newest tokens sit at positions last-2 .. last (loaded, not computed)."""
    caches = M.new_caches(model, max_len)
    rng = np.random.default_rng(1)
    for c in caches:
        held = np.arange(last - 2, last + 1, dtype=np.int64)
        pos = np.full(c.capacity, -1, dtype=np.int64)
        pos[held % c.capacity] = held
        load_state(c, pos, rng.standard_normal(c.k.shape).astype(np.float32),
                   rng.standard_normal(c.v.shape).astype(np.float32))
    return caches


def _replace(caches, li, cache):
    caches = list(caches)
    caches[li] = cache
    return caches


def _same_cache_twice(model):
    c = M.new_caches(model, 8)[0]
    return [c, c]


# name -> (windows, make(model) -> caches, tokens, keyword arguments, backends, expected kind)
STEP_ERRORS = {
    "token outside the vocabulary": ([4, None], lambda m: _fill(m, 3), [1, 61], {}, None, "argument"),
    "unknown backend": ([4, None], lambda m: _fill(m, 3), [1], {"backend": "gpu"}, None, "backend"),
    "num_threads 0": ([4, None], lambda m: _fill(m, 3), [1], {"num_threads": 0}, None, "argument"),
    "logits neither all nor last": ([4, None], lambda m: _fill(m, 3), [1], {"logits": "every"}, None, "argument"),
    "full-attention layer 1 overflows": ([4, None], lambda m: _fill(m, 3, max_len=6), [1, 2, 3, 4], {}, None,
                                         "cache"),
    "bounded sliding layer 1 overflows": ([4, 100], lambda m: _fill(m, 3, max_len=6), [1, 2, 3, 4], {}, None,
                                          "cache"),
    "one cache for two layers": ([4, 4], _same_cache_twice, [1, 2], {}, None, "cache"),
    "layers at different positions": ([4, None], lambda m: _replace(_fill(m, 3), 1, _fill(m, 2)[1]), [1], {},
                                      None, "cache"),
    "layer cache of another head_dim": ([4, None], lambda m: _replace(
        _fill(m, 3), 1, RollingBufferCache(None, 2, 4, np.float32, capacity=8)), [1], {}, None, "cache"),
    "layer cache of another window": ([4, None], lambda m: _replace(
        _fill(m, 3), 0, RollingBufferCache(5, 2, 8, np.float32)), [1], {}, None, "cache"),
    "one cache for a two-layer model": ([4, None], lambda m: _fill(m, 3)[:1], [1], {}, None, "cache"),
    "past the compiled kernel's 2**62": ([4, None], lambda m: _at(m, 2 ** 62 - 1), [1, 2], {}, ("cython",),
                                         "positions"),
    "past int64": ([4, None], lambda m: _at(m, 2 ** 63 - 2), [1], {}, None, "positions"),
}
CYTHON = pytest.param("cython", marks=pytest.mark.skipif(backend_missing() is not None,
                                                         reason=str(backend_missing())))


def _entry(entry, model, tokens, caches, kw):
    """Run one entry point; forward_packed puts a good sequence first, so it would be written first."""
    if entry == "forward":
        return [caches], lambda: M.forward(model, tokens, caches, **kw)
    if entry == "prefill_prompt":  # chunks of 1: the first chunk would run through every layer first
        return [caches], lambda: M.prefill_prompt(model, tokens, caches, chunk_size=1, **kw)
    good = _fill(model, 3, seed=5)
    return [good, caches], lambda: M.forward_packed(model, [[7], tokens], [good, caches], **kw)


def _snapshot(cache_lists):
    return [[(c.k.tobytes(), c.v.tobytes(), c.positions.tobytes(), c.n_seen, c.next_position) for c in cl]
            for cl in cache_lists]


STEP_CASES = [pytest.param(case, backend, id=f"{case}-{backend}", marks=CYTHON.marks if backend == "cython" else ())
              for case, (_, _, _, kw, backends, _) in STEP_ERRORS.items()
              for backend in (backends or ("reference", "cython")) if "backend" not in kw or backend == "reference"]


@pytest.mark.parametrize("entry", ["forward", "forward_packed", "prefill_prompt"])
@pytest.mark.parametrize("case,backend", STEP_CASES)
def test_a_refused_step_leaves_every_cache_bitwise_unchanged(case, backend, entry):
    windows, make, tokens, kw, _, kind = STEP_ERRORS[case]
    kw = {"backend": backend, **kw}
    model = make_model(window=windows, seed=3)
    caches = make(model)
    watched, call = _entry(entry, model, tokens, caches, kw)
    before = _snapshot(watched)
    with pytest.raises(SwarefError) as e:
        call()
    assert e.value.kind == kind, e.value
    assert _snapshot(watched) == before, f"{case}: a cache changed although the call was refused"


def test_batch_sharing_one_cache_list_is_refused_before_any_write():
    model = make_model(window=[4, None], seed=3)
    caches = _fill(model, 3)
    before = _snapshot([caches])
    with pytest.raises(SwarefError, match="same cache object"):
        M.forward_packed(model, [[1], [2]], [caches, caches])
    assert _snapshot([caches]) == before


def test_after_a_refused_step_the_sequence_continues_as_if_nothing_happened():
    model = make_model(window=[4, None], seed=3)
    caches, twin = _fill(model, 3, max_len=6), _fill(model, 3, max_len=6)
    with pytest.raises(SwarefError, match="cannot take 4 more"):
        M.forward(model, [1, 2, 3, 4], caches)
    assert np.array_equal(M.forward(model, [1, 2, 3], caches), M.forward(model, [1, 2, 3], twin))


GENERATE_ERRORS = [
    ("prompt token", dict(prompts=[[1, 2], [3, 61]]), "argument"),
    ("max_new_tokens", dict(max_new_tokens=-1), "argument"),
    ("chunk_size", dict(chunk_size=0), "schedule"),
    ("backend", dict(backend="gpu"), "backend"),
    ("num_threads", dict(num_threads=0), "argument"),
    ("sample", dict(sample="greedy"), "argument"),
]


@pytest.mark.parametrize("name,kw,kind", GENERATE_ERRORS, ids=[g[0] for g in GENERATE_ERRORS])
def test_generate_checks_everything_before_the_first_prompt_runs(name, kw, kind):
    model = make_model(window=[4, None], seed=3)
    calls = []
    args = dict(prompts=[[1, 2, 3], [4, 5]], max_new_tokens=3, on_token=lambda b, t: calls.append(t),
                progress=lambda d, t: calls.append((d, t)))
    args.update(kw)
    with pytest.raises(SwarefError) as e:
        M.generate(model, args.pop("prompts"), **args)
    assert e.value.kind == kind and calls == []


# --------------------------------------------- a window wider than the sequence (issue 8, item 9)

def test_a_window_wider_than_the_sequence_gets_a_bounded_buffer_with_the_same_logits():
    model = make_model(window=[50, 3], seed=13)
    toks = np.random.default_rng(6).integers(0, 61, 20)
    bounded = M.new_caches(model, 20)
    assert bounded[0].window is None and bounded[0].capacity == 20 and bounded[1].window == 3
    ring = [RollingBufferCache(50, 2, 8, np.float32), RollingBufferCache(3, 2, 8, np.float32)]
    a = M.prefill_prompt(model, toks[:14], bounded, chunk_size=4, logits="all")
    b = M.prefill_prompt(model, toks[:14], ring, chunk_size=4, logits="all")
    a = np.concatenate([a] + [M.forward(model, [t], bounded) for t in toks[14:]])
    b = np.concatenate([b] + [M.forward(model, [t], ring) for t in toks[14:]])
    assert np.array_equal(a, b), "the bounded buffer must give exactly the ring's logits"
    assert_close(a, oracle_logits(model, toks), atol=1e-4)
    with pytest.raises(SwarefError, match="window 50, allocated for 20 tokens"):
        M.forward(model, [1], bounded)


def test_a_huge_window_generates_like_full_attention_in_bounded_memory():
    wide, full = make_model(window=10 ** 12, seed=9), make_model(window=None, seed=9)
    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    res = M.generate(wide, [prompt], max_new_tokens=6)
    assert res.tokens == M.generate(full, [prompt], max_new_tokens=6).tokens
    slot = 2 * 2 * 8 * 4 + 8  # k and v: Hkv 2 x D 8 float32, plus an int64 position
    assert res.cache_bytes == 2 * (len(prompt) + 6) * slot


@pytest.mark.parametrize("entry", ["forward", "prefill_prompt"])
def test_a_model_step_holds_every_layer_cache_against_other_threads(entry):
    """Another thread holding layer 1's cache used to let layer 0 advance before the
    refusal; now the step takes every cache first and refuses with nothing written."""
    import threading
    from swaref.cache import exclusive
    model = make_model(window=[4, None], seed=1)
    caches = M.new_caches(model, 12)
    M.prefill_prompt(model, [1, 2, 3], caches)
    snap = [(c.k.copy(), c.v.copy(), c.positions.copy(), c.n_seen, c.next_position) for c in caches]
    started, release = threading.Event(), threading.Event()

    def hold():
        with exclusive(caches[1]):
            started.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    started.wait(10)
    try:
        call = (lambda: M.forward(model, [4, 5], caches)) if entry == "forward" else \
            (lambda: M.prefill_prompt(model, [4, 5, 6, 7, 8], caches, chunk_size=2))
        with pytest.raises(SwarefError, match="in use by another call"):
            call()
    finally:
        release.set()
        t.join()
    for c, (k, v, p, n, nxt) in zip(caches, snap):
        assert np.array_equal(c.k, k) and np.array_equal(c.v, v) and np.array_equal(c.positions, p)
        assert (c.n_seen, c.next_position) == (n, nxt)
    call()                                            # and it runs once the cache is free
