"""swaref's model against Hugging Face transformers' MistralForCausalLM (the `crosscheck` extra).

Tiny random models are built by transformers itself, saved with
save_pretrained, loaded by swaref.models.checkpoint and compared:

* logits for prompts of 3, W, W+1 and 5W tokens, prefilled with chunks of
  1, 3, W and the whole prompt, within 1e-4 (absolute, float32) of
  transformers' eager forward pass;
* a control: transformers with sliding_window = W + 1 must differ, so the
  comparison can fail on an off-by-one window;
* 40 greedy tokens identical to transformers' ``generate`` and to the argmax
  of transformers re-scoring the whole sequence in one forward pass;
* the same on the compiled backend when it is built.

Without torch/transformers these tests skip with the reason, unless
SWAREF_REQUIRE_CROSSCHECK=1 (CI) makes a missing extra fail.
"""

import numpy as np
import pytest

from oracle import assert_close
from crosscheck_helpers import BACKENDS, cache_kwarg, hf_logits, require_extra, scale_up_weights

pytestmark = pytest.mark.crosscheck

require_extra()
import torch  # noqa: E402
from transformers import MistralConfig, MistralForCausalLM  # noqa: E402

from swaref import models as M  # noqa: E402
from swaref.models import load_model  # noqa: E402

CONFIGS = {
    "L2-d64-gqa4:2-W4": dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                             sliding_window=4, tie_word_embeddings=False),
    "L3-d128-gqa4:1-W7": dict(num_hidden_layers=3, hidden_size=128, num_attention_heads=4, num_key_value_heads=1,
                              sliding_window=7, tie_word_embeddings=False),
    "L2-d96-gqa4:1-W4-tied": dict(num_hidden_layers=2, hidden_size=96, num_attention_heads=4,
                                  num_key_value_heads=1, sliding_window=4, tie_word_embeddings=True),
}
N_NEW = 40
CACHE_KWARG = cache_kwarg(MistralForCausalLM)
ATOL = 1e-4


def hf_model(kw, sliding_window=None, seed=0, attn="eager"):
    """A random MistralForCausalLM, weights redrawn so that attention is peaked (not HF's tiny init)."""
    kw = dict(kw)
    if sliding_window is not None:
        kw["sliding_window"] = sliding_window
    cfg = MistralConfig(vocab_size=97, intermediate_size=2 * kw["hidden_size"], rope_theta=10000.0,
                        rms_norm_eps=1e-5, max_position_embeddings=512, bos_token_id=1, eos_token_id=None,
                        pad_token_id=0, **kw)
    cfg._attn_implementation = attn
    torch.manual_seed(seed)
    model = MistralForCausalLM(cfg).eval()
    return scale_up_weights(model, seed)


@pytest.fixture(scope="module", params=list(CONFIGS), ids=list(CONFIGS))
def pair(request, tmp_path_factory):
    """(transformers model, swaref model loaded from its save_pretrained directory, W, name)."""
    kw = CONFIGS[request.param]
    model = hf_model(kw)
    d = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(str(d))
    return model, load_model(str(d)), kw["sliding_window"], request.param


def prompt_ids(T, seed=0):
    return np.random.default_rng(seed).integers(2, 97, T)


def test_transformers_masks_exactly_w_keys(pair):
    """transformers' eager mask for sliding_window = W: query p sees keys p-W+1..p (W keys), as documented."""
    from transformers.masking_utils import sliding_window_causal_mask_function
    W = pair[2]
    fn = sliding_window_causal_mask_function(W)
    for p in range(3 * W):
        seen = [j for j in range(3 * W) if bool(fn(0, 0, torch.tensor(p), torch.tensor(j)))]
        assert seen == list(range(max(0, p - W + 1), p + 1)), (p, seen)


@pytest.mark.parametrize("backend", BACKENDS)
def test_logits_match_transformers_for_every_chunking(pair, backend):
    hf, sw, W, name = pair
    for T in sorted({3, W, W + 1, 5 * W}):
        ids = prompt_ids(T, seed=T)
        want = hf_logits(hf, ids)
        for chunk in sorted({1, 3, W, T}):
            got = M.prefill_prompt(sw, ids, M.new_caches(sw, T), chunk_size=chunk, logits="all", backend=backend)
            assert_close(got, want, atol=ATOL, name=f"{name} T={T} chunk={chunk} backend={backend}")


def test_sdpa_path_agrees_too(pair):
    """transformers' default CPU path (torch SDPA with the same mask function) gives the same logits."""
    hf, sw, W, name = pair
    ids = prompt_ids(5 * W, seed=2)
    sdpa = hf_model(CONFIGS[name], attn="sdpa")
    assert sdpa.config._attn_implementation == "sdpa"
    ours = M.prefill_prompt(sw, ids, M.new_caches(sw, 5 * W), logits="all")
    assert_close(ours, hf_logits(sdpa, ids), atol=ATOL, name=f"{name} vs transformers sdpa")


def test_control_off_by_one_window_is_detected(pair):
    hf, sw, W, name = pair
    ids = prompt_ids(5 * W, seed=1)
    wider = hf_model(CONFIGS[name], sliding_window=W + 1)
    diff = np.abs(hf_logits(wider, ids) - M.prefill_prompt(sw, ids, M.new_caches(sw, 5 * W), logits="all"))
    assert diff[:W].max() < ATOL, "positions < W see the same keys under W and W+1"
    assert diff[W:].max() > 100 * ATOL, f"{name}: a window of W+1 should be visible, max diff {diff[W:].max():.2e}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_greedy_tokens_match_transformers_generate_and_rescoring(pair, backend):
    hf, sw, W, name = pair
    prompt = prompt_ids(2 * W + 3, seed=7)
    ours = M.generate(sw, [prompt], max_new_tokens=N_NEW, chunk_size=3, backend=backend).tokens[0]
    assert len(ours) == N_NEW
    with torch.no_grad():
        theirs = hf.generate(torch.tensor(prompt)[None], max_new_tokens=N_NEW, min_new_tokens=N_NEW,
                             do_sample=False, use_cache=True)[0, len(prompt):].tolist()
    full = hf_logits(hf, np.concatenate([prompt, ours]))
    rescored = full[len(prompt) - 1: -1].argmax(-1).tolist()
    assert ours == rescored, f"{name}: swaref greedy differs from transformers re-scoring the whole sequence"
    assert ours == theirs, f"{name}: swaref greedy differs from transformers.generate (cache path)"


def test_transformers_own_chunked_cache_path_agrees(pair):
    """transformers fed chunk by chunk through its DynamicSlidingWindowLayer cache (it keeps only W-1
    past tokens) gives the logits swaref gives for the same chunking: the third path of docs/model.md."""
    from transformers import DynamicCache
    hf, sw, W, name = pair
    T = 5 * W
    ids = prompt_ids(T, seed=5)
    for chunk in (1, 3, W + 1):
        cache = DynamicCache(config=hf.config)
        rows = []
        with torch.no_grad():
            for a in range(0, T, chunk):
                rows.append(hf(torch.tensor(ids[a:a + chunk])[None], use_cache=True,
                               **{CACHE_KWARG: cache}).logits[0].numpy())
        kept = {tuple(layer.keys.shape)[2] for layer in cache.layers}
        assert kept == {W - 1}, f"transformers' sliding cache kept {kept} past tokens, expected W-1 = {W - 1}"
        ours = M.prefill_prompt(sw, ids, M.new_caches(sw, T), chunk_size=chunk, logits="all")
        assert_close(ours, np.concatenate(rows), atol=ATOL, name=f"{name} chunk={chunk} vs transformers' cache")
