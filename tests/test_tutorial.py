"""The tutorial's worked examples (../shared/reference/sliding-window-tutorial.txt).

Every expected word list here was worked out by hand from the rule
``p - W < j <= p`` and the rolling-buffer rule ``slot = p mod W``, and is
written out literally; nothing expected comes from swaref.  Outputs are
compared with tests/oracle.py or with a softmax computed right here.
"""
import numpy as np
import pytest

import swaref
from oracle import assert_bitwise_equal, assert_close, brute_force_mask, dense_attention_f64

SENTENCE = ["The", "cat", "is", "on", "a", "chair"]
PROMPT = ["Can", "you", "tell", "me", "who", "is", "the", "richest", "man", "in", "history"]
HQ, HKV, D = 2, 1, 8          # GQA 2:1, so the examples also exercise the head mapping


def qkv(n, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, HQ, D)), rng.standard_normal((n, HKV, D)),
            rng.standard_normal((n, HKV, D)))


def softmax_over(q_row, k_rows, v_rows):
    """One query over exactly the given keys, written out here.  q_row [Hq, D], k/v [n, Hkv, D]."""
    out = np.empty((HQ, D))
    for h in range(HQ):
        kv = h // (HQ // HKV)
        s = k_rows[:, kv] @ q_row[h] / np.sqrt(D)
        w = np.exp(s - s.max())
        out[h] = (w / w.sum()) @ v_rows[:, kv]
    return out


# ---------------------------------------------------------------- W = 3, "The cat is on a chair"

VISIBLE_W3 = {            # by hand: query p sees p-2, p-1, p (those that exist)
    "The": ["The"],
    "cat": ["The", "cat"],
    "is": ["The", "cat", "is"],
    "on": ["cat", "is", "on"],
    "a": ["is", "on", "a"],
    "chair": ["on", "a", "chair"],
}


def test_window_3_mask_matches_hand_worked_sets_and_oracle():
    pos = np.arange(len(SENTENCE))
    mask = swaref.window_mask(pos, pos, 3)
    assert_bitwise_equal(mask, brute_force_mask(pos, pos, 3), name="window_mask")
    for i, word in enumerate(SENTENCE):
        assert [SENTENCE[j] for j in np.nonzero(mask[i])[0]] == VISIBLE_W3[word], word
    # The tutorial's sentence: the last token captures itself and the two preceding tokens.
    assert [SENTENCE[j] for j in np.nonzero(mask[-1])[0]] == ["on", "a", "chair"]


def test_window_3_softmax_rows_sum_to_one_and_attention_agrees():
    q, k, v = qkv(len(SENTENCE), seed=3)
    T = len(SENTENCE)
    pos = np.arange(T)
    visible = brute_force_mask(pos, pos, 3)
    # The tutorial's picture, head 0: scores, -inf where masked, softmax by rows.
    scores = np.where(visible, q[:, 0] @ k[:, 0].T / np.sqrt(D), -np.inf)
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    weights = e / e.sum(axis=1, keepdims=True)
    assert_close(weights.sum(axis=1), np.ones(T), atol=1e-12, name="row sums")
    assert np.all(weights[~visible] == 0.0), "every -inf must become exactly 0"
    assert np.all(weights[visible] > 0.0)

    out = swaref.attention(q, k, v, window=3)
    assert_close(out, dense_attention_f64(q, k, v, pos, pos, 3), atol=1e-12, name="attention vs oracle")
    assert_close(out[:, 0], weights @ v[:, 0], atol=1e-12, name="attention vs weights @ V (head 0)")
    for i, word in enumerate(SENTENCE):
        idx = [SENTENCE.index(w) for w in VISIBLE_W3[word]]
        assert_close(out[i], softmax_over(q[i], k[idx], v[idx]), atol=1e-12, name=f"query {word!r}")


def test_window_3_last_token_ignores_what_lies_outside_its_window():
    q, k, v = qkv(len(SENTENCE), seed=4)
    base = swaref.attention(q, k, v, window=3)[-1]
    for j, word in enumerate(SENTENCE):
        k2, v2 = k.copy(), v.copy()
        k2[j] += 5.0
        v2[j] += 5.0
        moved = np.abs(swaref.attention(q, k2, v2, window=3)[-1] - base).max()
        if word in ("on", "a", "chair"):
            assert moved > 1e-3, f"'chair' must depend on {word!r}"
        else:
            assert moved == 0.0, f"'chair' must not depend on {word!r} (moved by {moved})"


# ---------------------------------------------------------------- W = 4 rolling buffer

# Slot contents after each decoded token, by hand (slot = position mod 4, None = empty).
SLOTS_W4 = [
    ["The", None, None, None],
    ["The", "cat", None, None],
    ["The", "cat", "is", None],
    ["The", "cat", "is", "on"],
    ["a", "cat", "is", "on"],          # the 5th token 'a' replaces 'The' in slot 0
    ["a", "chair", "is", "on"],        # 'chair' replaces 'cat' in slot 1
]


def test_rolling_buffer_w4_wraps_as_in_the_tutorial():
    q, k, v = qkv(len(SENTENCE), seed=5)
    cache = swaref.RollingBufferCache(4, HKV, D, dtype=np.float64)
    for p, word in enumerate(SENTENCE):
        out = swaref.decode_step(q[p:p + 1], k[p:p + 1], v[p:p + 1], cache)
        slots = [SENTENCE[i] if i >= 0 else None for i in cache.positions]
        assert slots == SLOTS_W4[p], f"after {word!r}: {slots}"
        for s, w in enumerate(SLOTS_W4[p]):          # the stored keys are the words' own keys
            if w is not None:
                assert_bitwise_equal(cache.k[s], k[SENTENCE.index(w)], name=f"k in slot {s}")
                assert_bitwise_equal(cache.v[s], v[SENTENCE.index(w)], name=f"v in slot {s}")
        # Decode writes first, then attends over the (at most) 4 latest tokens, itself included.
        lo = max(0, p - 3)
        assert_close(out[0], softmax_over(q[p], k[lo:p + 1], v[lo:p + 1]), atol=1e-12, name=word)
    assert cache.n_seen == 6
    assert [SENTENCE[i] for i in cache.view()[2]] == ["is", "on", "a", "chair"]


# ---------------------------------------------------------------- W = 4 chunked prefill

# By hand, chunks of W = 4: the keys of each chunk are [cache in time order] +
# [chunk], and each query sees the keys with p - 4 < j <= p.
CHUNKS_W4 = [
    {"queries": ["Can", "you", "tell", "me"],
     "cache": [],
     "visible": {"Can": ["Can"], "you": ["Can", "you"], "tell": ["Can", "you", "tell"],
                 "me": ["Can", "you", "tell", "me"]},
     "cache_after": ["Can", "you", "tell", "me"]},
    {"queries": ["who", "is", "the", "richest"],
     "cache": ["Can", "you", "tell", "me"],
     "visible": {"who": ["you", "tell", "me", "who"], "is": ["tell", "me", "who", "is"],
                 "the": ["me", "who", "is", "the"], "richest": ["who", "is", "the", "richest"]},
     "cache_after": ["who", "is", "the", "richest"]},
    {"queries": ["man", "in", "history"],
     "cache": ["who", "is", "the", "richest"],
     "visible": {"man": ["is", "the", "richest", "man"], "in": ["the", "richest", "man", "in"],
                 "history": ["richest", "man", "in", "history"]},
     "cache_after": ["richest", "man", "in", "history"]},
]


def _idx(words):
    return [PROMPT.index(w) for w in words]


def test_chunk_schedule_is_the_tutorials():
    assert swaref.chunk_schedule(len(PROMPT), None, 4) == [4, 4, 3]


def test_chunked_prefill_w4_key_sets_match_the_tutorial():
    q, k, v = qkv(len(PROMPT), seed=6)
    cache = swaref.RollingBufferCache(4, HKV, D, dtype=np.float64)
    outs = []
    a = 0
    for n, chunk in enumerate(CHUNKS_W4, 1):
        s = len(chunk["queries"])
        assert PROMPT[a:a + s] == chunk["queries"]
        ck, cv, cpos = cache.view()
        assert [PROMPT[i] for i in cpos] == chunk["cache"], f"chunk {n}: cache before"
        assert_bitwise_equal(ck, k[_idx(chunk["cache"])], name=f"chunk {n}: cached keys")

        keys = chunk["cache"] + chunk["queries"]
        mask = swaref.window_mask(np.arange(a, a + s), np.array(_idx(keys), dtype=np.int64), 4)
        for i, word in enumerate(chunk["queries"]):
            assert [w for w, m in zip(keys, mask[i]) if m] == chunk["visible"][word], word

        out = swaref.prefill(q[a:a + s], k[a:a + s], v[a:a + s], cache, chunk_size=s)
        for i, word in enumerate(chunk["queries"]):
            idx = _idx(chunk["visible"][word])
            assert_close(out[i], softmax_over(q[a + i], k[idx], v[idx]), atol=1e-12,
                         name=f"chunk {n}, query {word!r}")
        assert [PROMPT[i] for i in cache.view()[2]] == chunk["cache_after"], f"chunk {n}: cache after"
        outs.append(out)
        a += s
    assert a == len(PROMPT)
    assert [PROMPT[i] for i in cache.positions] == ["man", "in", "history", "richest"]

    chunked = np.concatenate(outs)
    one_shot = swaref.attention(q, k, v, window=4)
    assert_close(chunked, one_shot, atol=1e-12, name="chunked vs one-shot")
    pos = np.arange(len(PROMPT))
    assert_close(chunked, dense_attention_f64(q, k, v, pos, pos, 4), atol=1e-12, name="chunked vs oracle")
    # The default schedule (chunks of W) in one call does the same as the three calls.
    whole = swaref.prefill(q, k, v, swaref.RollingBufferCache(4, HKV, D, dtype=np.float64))
    assert_close(whole, chunked, atol=1e-12, name="one prefill call vs chunk by chunk")


def test_writing_chunk_2_before_attending_would_lose_you_tell_me():
    # The tutorial's "we will see later why": prefill attends, then writes.
    _, k, v = qkv(len(PROMPT), seed=7)
    cache = swaref.RollingBufferCache(4, HKV, D, dtype=np.float64)
    swaref.cache_write(cache, k[:4], v[:4], 0)
    swaref.cache_write(cache, k[4:8], v[4:8], 4)          # chunk 2 written first
    left = {PROMPT[i] for i in cache.view()[2]}
    needed_by_who = set(CHUNKS_W4[1]["visible"]["who"])
    assert needed_by_who - left == {"you", "tell", "me"}


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 4, 5, 11])
def test_chunked_prefill_equals_one_shot_for_any_chunk_size(chunk_size):
    q, k, v = qkv(len(PROMPT), seed=8)
    cache = swaref.RollingBufferCache(4, HKV, D, dtype=np.float64)
    out = swaref.prefill(q, k, v, cache, chunk_size=chunk_size)
    pos = np.arange(len(PROMPT))
    assert_close(out, dense_attention_f64(q, k, v, pos, pos, 4), atol=1e-12, name=f"chunk_size={chunk_size}")
    assert [PROMPT[i] for i in cache.view()[2]] == ["richest", "man", "in", "history"]
