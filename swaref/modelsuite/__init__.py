"""Model-level conformance: tiny checkpoints with golden logits for every supported architecture,
and a checker that names the bug (docs/conformance.md, "Model-level conformance").

One module per job:

* ``cases``: the cases as data (one per architecture and config variant), sizes, tolerance;
* ``checkpoint``: a case's checkpoint in the Hugging Face layout (config.json,
  model.safetensors, tokenizer.json), weights scaled so that attention is peaked;
* ``reference``: the golden forward pass, dense and float64, with a per-layer
  attention plan (window, RoPE, softcap, sinks);
* ``variants``: the known-wrong variants, as changes to that plan;
* ``generate``: the suite folder and its manifest (``swaref models generate``);
* ``suite``: reading a suite safely (schema, hashes, paths, sizes);
* ``results``: an engine's logits from a folder or a Python function;
* ``check``: PASS/FAIL, the diagnosis, exit codes, JSON report (``swaref models check``);
* ``engines``: swaref as an engine, and swaref with one planted bug;
* ``cli``: the ``swaref models`` subcommand.
"""
from .cases import CASES, SUITES, ModelCase
from .check import check_model_suite
from .generate import generate_suite
from .variants import VARIANTS

__all__ = ["CASES", "SUITES", "ModelCase", "check_model_suite", "generate_suite", "VARIANTS"]
