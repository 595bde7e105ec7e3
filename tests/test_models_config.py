"""swaref.models.config: ModelConfig validates every field in one place, with sanity limits."""
import pytest

from model_helpers import make_cfg

from swaref.errors import SwarefError


@pytest.mark.parametrize("kw,match", [
    (dict(n_heads=3), "multiple of n_kv_heads"), (dict(head_dim=7), "even"), (dict(vocab=0), "vocab_size"),
    (dict(window=[4]), "2 entries"), (dict(window=0), "window"), (dict(layout="complex"), "rope_layout"),
    (dict(eos=(61,)), "eos_token_ids")])
def test_bad_config_is_rejected(kw, match):
    with pytest.raises(SwarefError, match=match):
        make_cfg(**kw)
