"""The llama.cpp worked example of docs/conformance.md, run: its `mimo2` GGUF writer, taken from the docs.

Needs llama-cpp-python (``import llama_cpp``) and llama.cpp's gguf-py (``import gguf``, or the
folder named by SWAREF_GGUF_PY, e.g. llama_cpp_python-0.3.36/vendor/llama.cpp/gguf-py); the module
is skipped without them.  The script in the docs writes the Mistral and Ministral cases as mimo2
GGUFs; llama.cpp's logits of every position must PASS both, and the same script with the window one
larger must be diagnosed `W+1` (so the script's window is what llama.cpp applies).
"""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

llama_cpp = pytest.importorskip("llama_cpp")
GGUF_PY = os.environ.get("SWAREF_GGUF_PY")
try:
    import gguf  # noqa: F401
except ImportError:
    if not GGUF_PY or not os.path.isdir(GGUF_PY):
        pytest.skip("llama.cpp's gguf-py is neither installed nor named by SWAREF_GGUF_PY", allow_module_level=True)

from swaref.modelsuite import check_model_suite, generate_suite  # noqa: E402

DOCS = os.path.join(os.path.dirname(__file__), "..", "docs", "conformance.md")


def docs_script():
    """The write_mimo2_gguf.py block of docs/conformance.md."""
    text = open(DOCS).read()
    m = re.search(r"```python\n(# write_mimo2_gguf\.py .*?)```", text, re.S)
    assert m, "the mimo2 writer is missing from docs/conformance.md"
    return m.group(1)


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("models-core"))
    generate_suite(d)
    return d


def write_gguf(tmp_path, case_dir, name, *extra):
    script = tmp_path / "write_mimo2_gguf.py"
    script.write_text(docs_script())
    out = str(tmp_path / name)
    env = dict(os.environ)
    if GGUF_PY:
        env["PYTHONPATH"] = GGUF_PY + os.pathsep + env.get("PYTHONPATH", "")
    subprocess.run([sys.executable, str(script), case_dir, out, *map(str, extra)], check=True, env=env)
    return out


def llama_cpp_engine(gguf_path):
    """The docs' llama_cpp_logits.py as an engine: every position's logits, float32 K/V cache."""
    def engine(checkpoint_dir, tokens):
        llm = llama_cpp.Llama(gguf_path, n_ctx=256, logits_all=True, type_k=0, type_v=0, n_threads=2,
                              verbose=False)
        llm.eval([int(t) for t in tokens])
        return np.array(llm.scores[:len(tokens)], dtype=np.float32)
    return engine


@pytest.mark.parametrize("case", ["mistral", "ministral"])
def test_llama_cpp_mimo2_passes(core, tmp_path, case):
    path = write_gguf(tmp_path, os.path.join(core, case), f"{case}.gguf")
    lines = []
    assert check_model_suite(core, python=llama_cpp_engine(path), out=lines.append, only={case}) == 0, lines
    assert lines[0].startswith(f"PASS    {case}")


def test_llama_cpp_mimo2_with_w_plus_1_is_diagnosed(core, tmp_path):
    path = write_gguf(tmp_path, os.path.join(core, "mistral"), "w17.gguf", 17)
    lines = []
    assert check_model_suite(core, python=llama_cpp_engine(path), out=lines.append, only={"mistral"}) == 1
    assert "matches `W+1`: agrees for positions < W = 16, diverges after" in lines[0]
