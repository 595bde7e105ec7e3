"""The README's quick tour and its two opening commands are what a new user runs first: keep them true."""
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")


def _readme():
    if not os.path.exists(README):
        pytest.skip("README.md is not beside the tests (installed test run)")
    with open(README, encoding="utf-8") as f:
        return f.read()


def test_quick_tour_runs_and_its_comments_are_true():
    text = _readme()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README.md has no python block"
    code = blocks[0]
    ns = {}
    exec(compile(code, "README.md quick tour", "exec"), ns)
    import swaref
    # The values the tour's comments promise.
    assert swaref.conventions.from_flash_attention((4095, 0)) == 4096
    assert swaref.conventions.from_mistral_one_file_ref(4096, "prefill") == 4097
    assert swaref.receptive_field(4096, 32, 200_000) == 200_000 - 32 * 4095 == 68_960
    for line in code.splitlines():
        m = re.match(r"(swaref\.[\w.]+\(.*\))\s+# ([\d_]+)", line.strip())
        if m:
            assert eval(m.group(1), ns) == int(m.group(2)), line


def test_ci_runs_the_readme_test_command():
    text = _readme()
    cmds = re.findall(r"```bash\n(.*?)```", text, flags=re.S)[0].strip().splitlines()
    assert len(cmds) == 2 and "swaref demo" in cmds[0]
    test_cmd = cmds[1].split("#")[0].strip()
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        ci_lines = [line.strip() for line in f]
    assert test_cmd in ci_lines, f".ci/run must run the README's test command {test_cmd!r} verbatim"
