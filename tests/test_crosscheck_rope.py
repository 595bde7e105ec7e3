"""swaref's RoPE variants against transformers 5.24.0's own rotary embeddings, at positions up to 100,000.

For each variant (default, linear, llama3, yarn with and without mscale, partial
rotary) the config goes through swaref's config.json reader and transformers'
config class, then:

* the frequencies and the attention factor equal what transformers' init
  function gives, computed in float64 (``torch.float`` patched to float64 while
  it runs: transformers' formulas, swaref's precision), within 1e-12 relative
  (1e-7 for yarn, whose ramp transformers computes in float32 regardless);
* cos and sin at positions 0..63 and 2,000 positions up to 100,000 equal
  cos/sin of those float64 angles within 1e-6 (float32 rounding) plus, for yarn,
  p times the frequency difference;
* against transformers' unpatched float32 forward the difference grows with the
  position (docs/model.md, "Precision"): the stated band, 2e-7 * p + 1e-6, holds
  and the float32 error really is there (a control that the comparison sees it).
"""

import numpy as np
import pytest

from crosscheck_helpers import require_extra

pytestmark = pytest.mark.crosscheck

require_extra()
import torch  # noqa: E402
from transformers import LlamaConfig, Phi3Config  # noqa: E402
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding  # noqa: E402
from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding  # noqa: E402

from swaref.models import rope as R  # noqa: E402
from swaref.models.hfconfig import config_from_dict  # noqa: E402

HEAD_DIM = 64
POSITIONS = np.unique(np.concatenate([np.arange(64), np.linspace(64, 100_000, 2000).astype(np.int64)]))
VARIANTS = {
    "default": {"rope_type": "default", "rope_theta": 10000.0},
    "default-1e6": {"rope_type": "default", "rope_theta": 1e6},
    "linear": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 8.0},
    "llama3": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    "yarn": {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0, "original_max_position_embeddings": 32768},
    "yarn-mscale": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0, "mscale": 1.0,
                    "mscale_all_dim": 0.707, "beta_fast": 32, "beta_slow": 1, "original_max_position_embeddings": 4096},
    # gpt-oss's (GptOssConfig's default): the ramp's ends not rounded to whole dims.
    "yarn-gpt-oss": {"rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                     "truncate": False, "original_max_position_embeddings": 4096},
}


def _configs(params):
    raw = dict(model_type="llama", vocab_size=8, hidden_size=HEAD_DIM * 2, intermediate_size=8, num_hidden_layers=1,
               num_attention_heads=2, head_dim=HEAD_DIM, max_position_embeddings=131072, rope_parameters=params)
    return config_from_dict(raw), LlamaConfig(**{k: v for k, v in raw.items() if k != "model_type"})


def _float64_init(module_cls, cfg, monkeypatch):
    """transformers' own init function for cfg's rope_type, with torch.float meaning float64 while it runs."""
    rtype = cfg.rope_parameters["rope_type"]
    fn = module_cls.compute_default_rope_parameters if rtype == "default" else ROPE_INIT_FUNCTIONS[rtype]
    with monkeypatch.context() as m:
        m.setattr(torch, "float", torch.float64)
        inv_freq, att = fn(cfg)
    assert inv_freq.dtype == torch.float64
    return inv_freq.numpy(), float(att)


def _their_forward(module):
    x = torch.zeros(1, dtype=torch.float32)
    with torch.no_grad():
        cos, sin = module(x, torch.tensor(POSITIONS)[None])
    half = cos.shape[-1] // 2
    return cos[0, :, :half].double().numpy(), sin[0, :, :half].double().numpy()


def _check(ours_cfg_rope, module_cls, theirs_cfg, rot_dim, monkeypatch, name):
    theta, scaling = ours_cfg_rope
    f, att = R.rope_inv_freq(rot_dim, theta, scaling)
    f64, att64 = _float64_init(module_cls, theirs_cfg, monkeypatch)
    # yarn's ramp is float32 in transformers even with the patch (linear_ramp_factor's dtype=torch.float32);
    # with truncate false its ends are fractional too, one more float32 rounding (measured 1.007e-7).
    rtol = (2e-7 if "gpt-oss" in name else 1e-7) if "yarn" in name else 1e-12
    np.testing.assert_allclose(f, f64, rtol=rtol, err_msg=f"{name}: frequencies")
    assert abs(att - att64) <= 1e-12 * att64, (name, att, att64)
    cos, sin = R.rope_cos_sin(POSITIONS, rot_dim, theta, scaling)
    ang = POSITIONS[:, None].astype(np.float64) * f64[None, :]
    tol = 1e-6 + 1.01 * att64 * POSITIONS[:, None] * np.abs(f - f64).max()
    assert (np.abs(cos - np.cos(ang) * att64) <= tol).all() and (np.abs(sin - np.sin(ang) * att64) <= tol).all(), name
    # transformers' own float32 forward: within the stated band, and visibly off at long positions.
    c32, s32 = _their_forward(module_cls(theirs_cfg))
    err = np.maximum(np.abs(cos - c32), np.abs(sin - s32)).max(axis=1)
    band = 2e-7 * POSITIONS + 1e-6
    assert (err <= band).all(), f"{name}: worst excess {(err - band).max():.2e}"
    assert err[POSITIONS >= 50_000].max() > 10 * err[POSITIONS < 64].max(), f"{name}: float32 error not seen"
    return err


@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_variant_equals_transformers_rotary_embedding_up_to_100k(name, monkeypatch):
    ours, theirs = _configs(dict(VARIANTS[name]))
    err = _check(ours.layer_rope(0), LlamaRotaryEmbedding, theirs, HEAD_DIM, monkeypatch, name)
    print(f"\n{name}: vs float32 transformers max err {err[POSITIONS < 64].max():.1e} (p<64), "
          f"{err.max():.1e} (p<=100k)")


def test_partial_rotary_equals_phi3_rotary_embedding(monkeypatch):
    theirs = Phi3Config(hidden_size=HEAD_DIM * 2, num_attention_heads=2, partial_rotary_factor=0.5,
                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    _check((10000.0, ()), Phi3RotaryEmbedding, theirs, HEAD_DIM // 2, monkeypatch, "partial 0.5")


def test_variants_differ_so_the_comparison_can_fail():
    f = {n: R.rope_inv_freq(HEAD_DIM, _configs(dict(p))[0].rope_theta, _configs(dict(p))[0].rope_scaling)[0]
         for n, p in VARIANTS.items()}
    names = list(f)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not np.allclose(f[a], f[b], rtol=1e-6), (a, b)
