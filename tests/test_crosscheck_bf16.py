"""bfloat16 checkpoints against transformers (issue 13 section 2): a tiny random Mistral saved by
transformers in bfloat16, loaded by swaref with dtype="bfloat16".

* every matrix swaref holds is the file's bfloat16 bits, unchanged; every vector float32;
* a float32 checkpoint loaded with dtype="bfloat16" holds torch's own nearest-even rounding;
* swaref's logits (both backends, prefill in chunks and decode steps) match transformers running
  the same bfloat16 weights widened to float32 (``from_pretrained(..., dtype=torch.float32)``: exact),
  within the float32 tolerance the other crosschecks use; the float32 checkpoint's own logits
  (weights not rounded) fail it.
"""
import numpy as np
import pytest

from crosscheck_helpers import BACKENDS, hf_logits, require_extra, scale_up_weights
from oracle import assert_close

pytestmark = pytest.mark.crosscheck

require_extra()
import torch  # noqa: E402
from transformers import MistralConfig, MistralForCausalLM  # noqa: E402

from swaref import models as M  # noqa: E402
from swaref.models import load_model  # noqa: E402
from swaref.models.checkpoint import expected_tensors  # noqa: E402

ATOL = 1e-4


def hf_model(tie):
    cfg = MistralConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, sliding_window=5, rope_theta=10000.0,
                        rms_norm_eps=1e-5, max_position_embeddings=512, bos_token_id=1, eos_token_id=None,
                        pad_token_id=0, tie_word_embeddings=tie)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    return scale_up_weights(MistralForCausalLM(cfg).eval(), 0)


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def saved(request, tmp_path_factory):
    """(transformers float32 model holding the bfloat16 values, bf16 directory, float32 directory)."""
    model = hf_model(request.param)
    d32 = tmp_path_factory.mktemp("f32")
    model.save_pretrained(str(d32))
    d16 = tmp_path_factory.mktemp("bf16")
    model.to(torch.bfloat16).save_pretrained(str(d16))
    # Loaded afresh in float32 (exact widening), so that its rotary buffers are not the bfloat16 ones
    # that .to(torch.bfloat16) made.
    wide = MistralForCausalLM.from_pretrained(str(d16), dtype=torch.float32, attn_implementation="eager").eval()
    return wide, str(d16), str(d32)


def swaref_tensors(model):
    out = {"embed": model.embed, "lm_head": model.lm_head, "final_norm": model.final_norm}
    for i, lw in enumerate(model.layers):
        out.update({(i, n): getattr(lw, n) for n in M.LAYER_TENSORS if getattr(lw, n) is not None})
    return out


def check_bits(model, state, expect):
    """Each swaref tensor against expect(torch tensor) -> numpy array."""
    mine = swaref_tensors(model)
    for name, (slot, _) in expected_tensors(model.config).items():
        got = mine[slot]
        want = expect(state[name])
        assert got.dtype == want.dtype and np.array_equal(got, want), name


def test_bfloat16_checkpoint_bits_are_kept(saved):
    hf, d16, _ = saved
    state = {k: v.to(torch.bfloat16) for k, v in hf.state_dict().items()}
    model = load_model(d16, dtype="bfloat16")
    assert model.dtype == "bfloat16"
    check_bits(model, state, lambda t: (t.view(torch.int16).numpy().view(np.uint16) if t.ndim >= 2
                                        else t.float().numpy()))


def test_float32_checkpoint_is_rounded_as_torch_rounds(saved):
    _, d16, d32 = saved
    model = load_model(d32, dtype="bfloat16")
    state = MistralForCausalLM.from_pretrained(d32, dtype=torch.float32).state_dict()
    check_bits(model, state, lambda t: (t.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
                                        if t.ndim >= 2 else t.numpy()))
    # ... which is what the bfloat16 checkpoint holds
    again = load_model(d16, dtype="bfloat16")
    assert np.array_equal(again.layers[0].w_gate, model.layers[0].w_gate)


@pytest.mark.parametrize("backend", BACKENDS)
def test_logits_match_transformers_on_the_widened_weights(saved, backend):
    hf, d16, _ = saved
    model = load_model(d16, dtype="bfloat16")
    ids = np.random.default_rng(0).integers(2, 97, 24)
    want = hf_logits(hf, ids)
    caches = M.new_caches(model, len(ids))
    got = M.prefill_prompt(model, ids[:16], caches, chunk_size=6, backend=backend, logits="all")
    steps = [M.forward(model, [t], caches, backend=backend) for t in ids[16:]]
    assert_close(np.concatenate([got] + steps), want, atol=ATOL, name=f"bf16 {backend}")
    # Control: the float32 checkpoint's own logits differ from these by far more than ATOL.
    f32 = load_model(saved[2])
    other = M.prefill_prompt(f32, ids, M.new_caches(f32, len(ids)), backend=backend, logits="all")
    with pytest.raises(AssertionError):
        assert_close(other, want, atol=ATOL)
