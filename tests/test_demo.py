"""`swaref demo`: runs, fits 80 columns, shows the tutorial's facts, ends with a passing check.

Expected facts (which words a query sees, which slot 'a' lands in) are the
tutorial's, written out here by hand; printed numbers are compared with a
computation done in this file from the demo's (seeded) inputs.
"""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import swaref
from swaref import demo
from swaref.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SENTENCE = ["The", "cat", "is", "on", "a", "chair"]
FINAL = re.compile(r"^Check: chunked prefill == one-shot attention: max \|difference\| = (\S+)\s+OK$")


def run_demo(capsys, *args):
    rc = main(["demo", *args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def default_output():
    # One in-process run shared by the content tests (capsys is function-scoped).
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["demo"])
    return rc, buf.getvalue()


def assert_fits_80(text):
    long = [(i + 1, len(l), l) for i, l in enumerate(text.splitlines()) if len(l) > 80]
    assert not long, f"lines over 80 columns: {long[:3]}"


def final_diff(text):
    last = [l for l in text.splitlines() if l.strip()][-1]
    m = FINAL.match(last)
    assert m, f"the last line is not the chunked == one-shot check: {last!r}"
    return float(m.group(1))


def table_after(lines, title, n_rows):
    """Rows (label, cells) of the table printed under the line ``title``."""
    i = lines.index(title)
    rows = []
    for line in lines[i + 2:i + 2 + n_rows]:      # skip the column header
        parts = line.split()
        rows.append((parts[0], parts[1:]))
    return rows


def test_default_demo_exits_0_fits_80_columns_and_checks_out(default_output):
    rc, out = default_output
    assert rc == 0
    assert_fits_80(out)
    for heading in ("1. Attention scores: causal vs sliding window (W = 3)",
                    "2. The receptive field grows by W - 1 = 2 per layer",
                    "3. The rolling buffer cache (W = 4 slots)",
                    "4. Chunked prefill (W = 4, chunks of 4 tokens)"):
        assert heading in out.splitlines(), heading
    assert final_diff(out) <= 1e-12


def test_score_tables_show_the_window_3_mask_and_unit_row_sums(default_output):
    _, out = default_output
    lines = out.splitlines()
    visible_w3 = [[p - 3 < j <= p for j in range(6)] for p in range(6)]     # by hand
    causal = [[j <= p for j in range(6)] for p in range(6)]
    for name, vis in (("Causal", causal), ("Sliding window, W = 3", visible_w3)):
        scores = table_after(lines, f"{name}: scores before the softmax (row = query, column = key)", 6)
        weights = table_after(lines, f"{name}: weights after the softmax", 6)
        assert [r[0] for r in scores] == SENTENCE
        for p, ((_, s), (_, w)) in enumerate(zip(scores, weights)):
            assert [c == "-inf" for c in s] == [not v for v in vis[p]], f"{name} row {p}: {s}"
            assert [c == "0" for c in w[:6]] == [not v for v in vis[p]], f"{name} row {p}: {w}"
            assert w[6] == "1.000000", f"{name} row {p} sums to {w[6]}"
            assert abs(sum(float(c) for c in w[:6]) - 1.0) <= 6 * 0.005


def test_printed_scores_are_q_dot_k_over_sqrt_d(default_output):
    _, out = default_output
    q, k, _ = demo.embed(SENTENCE, 4, 0, salt=1)        # the demo's seeded inputs
    expected = q[:, 0] @ k[:, 0].T / 2.0                  # sqrt(D) = 2
    rows = table_after(out.splitlines(), "Causal: scores before the softmax (row = query, column = key)", 6)
    for p, (_, cells) in enumerate(rows):
        for j in range(p + 1):
            assert abs(float(cells[j]) - expected[p, j]) <= 0.005 + 1e-9, (p, j, cells[j])


def test_rolling_buffer_table_wraps_like_the_tutorial(default_output):
    _, out = default_output
    rows = {}
    for line in out.splitlines():
        m = re.match(r"^\s+(\d)\s+(\w+)\s+\d+\s+\d+\s+(\|.*\|)\s+next (\d)$", line)
        if m:
            cells = [c.strip() for c in m.group(3).strip("|").split("|")]
            rows[int(m.group(1))] = (m.group(2), cells, int(m.group(4)))
    assert sorted(rows) == [1, 2, 3, 4, 5, 6]
    # By hand: slot = p mod 4; '*' marks the slot just written; next = (p + 1) mod 4.
    assert rows[4] == ("on", ["The", "cat", "is", "on*"], 0)
    assert rows[5] == ("a", ["a*", "cat", "is", "on"], 1)      # 'a' took the slot that held 'The'
    assert rows[6] == ("chair", ["a", "chair*", "is", "on"], 2)
    assert 'replacing "The" (position 0)' in out


def test_prefill_section_shows_the_tutorials_key_sets(default_output):
    _, out = default_output
    sees = {}
    for line in out.splitlines():
        m = re.match(r'^\s+"(\w+)"\s+sees\s+(.*)$', line)
        if m:
            sees[m.group(1)] = m.group(2).split()
    # By hand from p - 4 < j <= p over the 11-word prompt.
    assert sees["who"] == ["you", "tell", "me", "who"]
    assert sees["richest"] == ["who", "is", "the", "richest"]
    assert sees["history"] == ["richest", "man", "in", "history"]
    assert "  keys   : cache [Can you tell me] + chunk [who is the richest]" in out
    assert "  keys   : cache [who is the richest] + chunk [man in history]" in out
    assert "cache after: slots [man | in | history | richest] = richest man in history" in out


@pytest.mark.parametrize("args", [["--window", str(w)] for w in range(1, demo.MAX_WINDOW + 1)]
                         + [["--seed", "7", "--dim", "16"], ["--dim", "1"]])
def test_options_keep_80_columns_and_a_passing_check(capsys, args):
    rc, out, _ = run_demo(capsys, *args)
    assert rc == 0
    assert_fits_80(out)
    assert final_diff(out) <= 1e-12


@pytest.mark.parametrize("bad", [["--window", "0"], ["--window", "7"], ["--window", "x"], ["--dim", "0"]])
def test_bad_options_are_rejected_by_argparse(capsys, bad):
    with pytest.raises(SystemExit) as e:
        main(["demo", *bad])
    assert e.value.code == 2
    assert bad[0] in capsys.readouterr().err


def test_python_m_swaref_demo_runs_anywhere_and_matches_in_process(tmp_path, default_output):
    # cwd is an empty folder: the demo needs no tutorial file next to it.
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("MPLBACKEND", None)
    p = subprocess.run([sys.executable, "-m", "swaref", "demo"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout == default_output[1]
    assert_fits_80(p.stdout)
    assert final_diff(p.stdout) <= 1e-12


def test_plot_writes_non_empty_pngs(capsys, tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install 'swaref[plot]')")
    outdir = tmp_path / "figs" / "nested"
    rc, out, _ = run_demo(capsys, "--plot", str(outdir))
    assert rc == 0
    walkthrough, listing = out.split(f"\nFigures written to {outdir}:\n")
    assert_fits_80(walkthrough)
    assert final_diff(walkthrough) <= 1e-12
    names = sorted(os.listdir(outdir))
    assert names == ["1_attention_scores.png", "2_receptive_field.png",
                     "3_rolling_buffer.png", "4_chunked_prefill.png", "5_window_family.png"]
    for name in names:
        data = (outdir / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        assert len(data) > 5000, f"{name} is suspiciously small ({len(data)} bytes)"
        assert f"  {name}" in listing.splitlines()


def test_plot_without_matplotlib_says_so_and_fails(capsys, tmp_path, monkeypatch):
    # A None entry in sys.modules makes `import matplotlib` raise ImportError.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    outdir = tmp_path / "figs"
    rc, out, err = run_demo(capsys, "--plot", str(outdir))
    assert rc != 0
    assert "matplotlib" in err and "pip install" in err
    assert out == ""                       # refuses before printing the walkthrough
    assert not outdir.exists()


def test_plot_into_a_file_is_a_clear_error(capsys, tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install 'swaref[plot]')")
    not_a_dir = tmp_path / "taken"
    not_a_dir.write_text("x")
    rc, out, err = run_demo(capsys, "--plot", str(not_a_dir))
    assert rc != 0
    assert "--plot" in err and "cannot create" in err
    assert out == ""


def test_demo_numbers_match_the_library_directly():
    # The demo's decode and prefill sections against calls made here.
    r = demo.compute()
    q, k, v = demo.embed(demo.PROMPT, 4, 0, salt=2)
    cache = swaref.RollingBufferCache(4, 1, 4, dtype=np.float64)
    swaref.prefill(q, k, v, cache)
    assert np.array_equal(r["chunks"][-1]["slots"], cache.positions)
    assert [len(c["q_pos"]) for c in r["chunks"]] == [4, 4, 3]
    assert [c["n_cache"] for c in r["chunks"]] == [0, 4, 4]


def test_window_family_figure_shows_the_tutorials_sentence_under_each_window():
    # By hand, W = 3 on "The cat is on a chair" (p = query, j = key), from rule 1.
    fam = {f["name"]: f for f in demo.compute()["family"]}
    assert list(fam) == ["sliding window", "kept sink tokens", "two-sided (encoders)", "chunked (Llama 4)"]
    by_hand = {
        "sliding window": lambda p, j: p - 3 < j <= p,
        "kept sink tokens": lambda p, j: j <= p and (j == 0 or p - 3 < j),     # "The" stays visible
        "two-sided (encoders)": lambda p, j: p - 1 <= j <= p + 1,
        "chunked (Llama 4)": lambda p, j: j <= p and j // 3 == p // 3,          # "on" starts a new chunk
    }
    for name, rule in by_hand.items():
        want = np.array([[rule(p, j) for j in range(6)] for p in range(6)])
        np.testing.assert_array_equal(fam[name]["mask"], want, err_msg=name)
        assert fam[name]["agree"], name
    assert fam["two-sided (encoders)"]["engine"] == "FlashAttention window_size=(1, 1)"
    assert fam["chunked (Llama 4)"]["engine"] == "Llama 4 attention_chunk_size=3"


def test_window_family_check_can_fail():
    # The figure's check (window_mask == the kernel's rule) compares two computations: a
    # kernel rule for a wrong window must disagree with the mask.
    from swaref.windows import Chunked, Sliding, TwoSided
    pos = np.arange(6)
    for right, wrong in ((Chunked(3), Chunked(4)), (Sliding(3, 1), Sliding(3, 2)), (TwoSided(1, 1), TwoSided(1, 2)),
                         (3, 4)):
        assert np.array_equal(demo._kernel_rule_mask(right, 6), swaref.window_mask(pos, pos, right))
        assert not np.array_equal(demo._kernel_rule_mask(wrong, 6), swaref.window_mask(pos, pos, right))


@pytest.mark.parametrize("window", range(1, demo.MAX_WINDOW + 1))
def test_window_family_for_every_window_option(window):
    for f in demo.window_family(6, window):
        assert f["agree"], (window, f["name"])
        assert f["mask"].sum(axis=1).max() <= window + (1 if f["name"] == "kept sink tokens" else 0)
