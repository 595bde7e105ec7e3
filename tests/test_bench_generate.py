"""benchmarks/bench_generate.py runs end to end (--quick) and skips, with the reason, an engine it cannot run.

No timing is checked: the numbers depend on the machine and its load.  Marker
``crosscheck``: the script builds its checkpoint with transformers.
"""
import os
import subprocess
import sys

import pytest

from crosscheck_helpers import require_extra

require_extra()
pytestmark = pytest.mark.crosscheck

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "bench_generate.py")


def test_quick_run_prints_the_table_and_skips_missing_engines(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    env.pop("LLAMA_BENCH", None)
    out = subprocess.run([sys.executable, SCRIPT, "--quick", "--engines", "swaref:reference,llama.cpp:f32,"
                          "llama-bench:bf16,nosuch:engine", "--llama-cpp-dir", str(tmp_path / "no-llama.cpp"),
                          "--llama-bench", str(tmp_path / "no-llama-bench")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    for spec in ("llama.cpp:f32", "llama-bench:bf16", "nosuch:engine"):
        assert f"{spec} skipped: " in text, text
    rows = [line for line in text.splitlines() if line.startswith("swaref:reference ")]
    assert len(rows) == 1, text          # one table (1 thread in --quick), one row
    assert "limit tok/s" in text and "share" in text, text
