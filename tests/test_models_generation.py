"""swaref.models.generation: the model's chunked / cached / batched paths against the dense float64 oracle,
and refused calls that leave every cache bitwise unchanged."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from model_helpers import backend_missing, make_cfg, make_model, oracle_logits
from oracle import assert_close

from swaref import models as M
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
    with pytest.raises(SwarefError, match="chunk_size must be >= 1"):
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
