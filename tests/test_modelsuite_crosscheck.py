"""The model suite against transformers 5.24.0 (the `crosscheck` extra).

transformers loads each case's checkpoint folder with AutoModelForCausalLM (eager attention,
float32) and its logits must PASS every core case: the golden values are what
transformers computes, not only what swaref computes.  Controls: transformers with the window
dropped (sliding_window null) fails the Mistral case naming `window dropped`, and with the
window one larger fails naming `W+1`.
"""
import numpy as np
import pytest

from crosscheck_helpers import require_extra

pytestmark = pytest.mark.crosscheck

require_extra()
import torch  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

from swaref.modelsuite import check_model_suite, generate_suite  # noqa: E402
from swaref.modelsuite.cases import cases_of  # noqa: E402


def hf_engine(**override):
    """An engine: transformers on the case's folder, config keys overridden as given."""
    def engine(checkpoint_dir, tokens):
        cfg = AutoConfig.from_pretrained(checkpoint_dir, **override)
        model = AutoModelForCausalLM.from_pretrained(checkpoint_dir, config=cfg, attn_implementation="eager",
                                                     dtype=torch.float32).eval()
        with torch.no_grad():
            return model(torch.tensor(np.asarray(tokens))[None]).logits[0].double().numpy()
    return engine


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("models-core"))
    generate_suite(d)
    return d


def test_transformers_passes_every_case(core):
    lines = []
    assert check_model_suite(core, python=hf_engine(), out=lines.append) == 0, "\n".join(lines)
    assert sum(line.startswith("PASS") for line in lines) == len(cases_of("core"))


@pytest.mark.parametrize("override, variant", [({"sliding_window": None}, "window dropped"),
                                               ({"sliding_window": 17}, "W+1")])
def test_transformers_with_a_planted_bug_is_diagnosed(core, override, variant):
    lines = []
    assert check_model_suite(core, python=hf_engine(**override), out=lines.append, only={"mistral"}) == 1
    assert f"matches `{variant}`: agrees for positions < W = 16, diverges after" in lines[0]
