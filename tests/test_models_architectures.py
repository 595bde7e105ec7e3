"""swaref.models.architectures: the declared families and formats are consistent with ModelConfig and loadable."""
import dataclasses

import pytest

from model_helpers import hf_config, make_model

from swaref.models.architectures import ARCHITECTURES, FORMATS, ROPE_LAYOUTS
from swaref.models.checkpoint import CheckpointError, config_from_dict
from swaref.models.config import ModelConfig


def test_every_format_maps_only_config_fields_and_names_its_layout():
    config_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    for fmt in FORMATS.values():
        assert set(fmt.fields) <= config_fields and set(fmt.required) <= set(fmt.fields), fmt.name
        assert set(fmt.defaults) <= set(fmt.fields) and fmt.rope_layout in ROPE_LAYOUTS
        assert len(set(fmt.fields.values())) == len(fmt.fields), f"{fmt.name}: two fields read one file field"


@pytest.mark.parametrize("arch", list(ARCHITECTURES.values()), ids=list(ARCHITECTURES))
def test_every_architecture_is_recognised_by_class_or_model_type(arch):
    base = hf_config(make_model(window=4).config)
    for names in ({"architectures": [arch.hf_classes[0]], "model_type": None},
                  {"architectures": None, "model_type": arch.name}):
        cfg = config_from_dict(dict(base, **names))
        assert cfg.windows == ((4, 4) if arch.sliding_window else (None, None))
    with pytest.raises(CheckpointError, match="hidden_act 'gelu' is not supported"):
        config_from_dict(dict(base, architectures=[arch.hf_classes[0]], hidden_act="gelu"))
