"""The C port in examples/c_port passes the core suite through ``swaref vectors check --exec``.

It is compiled here with the system compiler (``$CC`` or ``cc``) into a temporary
folder.  In CI (env CI=true) a missing compiler is a failure, not a skip: the
port is the proof that docs/conformance.md is enough to write a conforming port.
"""
import os
import shutil
import subprocess

import numpy as np
import pytest

from swaref import conformance as VX
from swaref.conformance import safetensors_io as ST

from conformance_helpers import core_suite, window_of

SRC = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "c_port", "swaref_port.c")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _compiler():
    cc = os.environ.get("CC", "cc").split()
    if shutil.which(cc[0]) is None:
        msg = f"no C compiler: {cc[0]!r} not found on PATH"
        if IN_CI:
            pytest.fail(msg + " (CI=true: the C port must be built and checked in CI)")
        pytest.skip(msg)
    return cc


WARNINGS = ["-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror"]
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"]


def _build(tmp, source_text=None, name="swaref_port", flags=("-O2",)):
    cc = _compiler()
    src = os.path.join(tmp, name + ".c")
    with open(SRC) as f:
        text = f.read()
    with open(src, "w") as f:
        f.write(source_text(text) if source_text else text)
    exe = os.path.join(tmp, name)
    r = subprocess.run(cc + WARNINGS + list(flags) + ["-o", exe, src, "-lm"], capture_output=True, text=True)
    assert r.returncode == 0, f"compiling {SRC} failed:\n{r.stderr}"
    return exe


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("cport"))
    exe = _build(tmp)
    return tmp, exe, core_suite(tmp_path_factory)[0]


def test_c_port_passes_core_suite(built, tmp_path):
    _, exe, suite = built
    lines = []
    rep = tmp_path / "report.json"
    code = VX.check_suite(suite, exec_cmd=f"{exe} {{in}} {{out}}", out=lines.append, json_report=str(rep))
    assert code == 0, "\n".join(l for l in lines if not l.startswith("PASS"))
    assert "0 failed, 0 missing" in next(l for l in lines if l.startswith("summary:"))
    assert lines[-1].endswith(" passed, 0 failed")
    claim = next(l for l in lines if l.startswith("claim:"))   # every feature covered: a spec 1.1 claim
    assert "swaref spec 1.1" in claim and "SKIPPED" not in claim, claim


@pytest.mark.slow
def test_c_port_passes_full_suite(built, tmp_path):
    """Every case of the full suite (spec 1.1: softcap, sinks, slack, rollback included): about
    35 s on 2 cores, most of it generating the suite."""
    _, exe, _ = built
    suite = tmp_path / "full"
    VX.generate_suite(str(suite), "full")
    lines = []
    code = VX.check_suite(str(suite), exec_cmd=f"{exe} {{in}} {{out}}", out=lines.append)
    assert code == 0, "\n".join(l for l in lines if not l.startswith("PASS"))
    claim = next(l for l in lines if l.startswith("claim:"))
    assert "swaref spec 1.1" in claim and "suite full" in claim and "SKIPPED" not in claim, claim


def test_c_port_is_clean_under_asan_and_ubsan(built, tmp_path):
    """The core suite and the hand-written spec 1.1 cases with AddressSanitizer (leaks included)
    and UBSan, any finding fatal: a sanitizer report makes the port exit non-zero, a FAIL."""
    cc = _compiler()
    probe = subprocess.run(cc + SANITIZE + ["-x", "c", "-o", str(tmp_path / "probe"), "-"],
                           input="int main(void) { return 0; }\n", capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"{cc[0]} cannot build with -fsanitize=address,undefined here: {probe.stderr[-300:]}")
    _, _, suite = built
    exe = _build(str(tmp_path), name="swaref_port_asan", flags=["-O1"] + SANITIZE)
    lines = []
    code = VX.check_suite(suite, exec_cmd=f"{exe} {{in}} {{out}}", out=lines.append)
    assert code == 0, "\n".join(l for l in lines if not l.startswith("PASS"))
    rng = np.random.default_rng(2)
    for name, tensors, op in [
            ("softcap", _attention_case(rng, softcap=np.array(0.5)), "attention"),
            ("overflow_sinks", _attention_case(rng, mag=1e160, sinks=rng.standard_normal(4)), "attention"),
            ("bad_sinks", _attention_case(rng, sinks=np.zeros(3)), "attention"),
            ("rollback", _trace_case(rng, [(0, 9), (2, 3), (1, 1), (0, 4), (2, 13), (0, 2)]), "decode"),
            ("bad_rollback", _trace_case(rng, [(0, 9), (2, 4)]), "decode"),
            ("two_sided", _attention_case(rng, window=None, two_sided=np.array([2**63 - 1, 2**63 - 1])), "attention"),
            ("chunk_huge", _attention_case(rng, window=None, attention_chunk=np.array(2**63 - 1)), "attention"),
            ("sink_huge", _attention_case(rng, sink_tokens=np.array(2**63 - 1)), "attention"),
            ("sink_trace", _trace_case(rng, [(0, 9), (2, 1), (1, 1), (0, 3), (2, 5)], sink_tokens=np.array(2)),
             "decode"),
            ("chunk_trace", _trace_case(rng, [(0, 10), (2, 2), (1, 1), (2, 3)], window=None,
                                        attention_chunk=np.array(4)), "decode")]:
        _run_case(exe, tmp_path, tensors, op, name)   # asserts exit status 0
    # Hostile values that once overflowed int64 (UBSan): a schedule summing past 2**63, and an
    # initial ring holding position 2**63 - 1, whose next position does not exist.
    top = 2 ** 63 - 1
    t = _trace_case(rng, [(0, 3)], window=4, capacity=4)
    t["schedule"] = np.array([top, top, 5], dtype=np.int64)
    assert _run_case(exe, tmp_path, t, "prefill", "huge_schedule") == ("err", "schedule")
    pos = np.full(4, -1, dtype=np.int64)
    pos[top % 4] = top
    t = _trace_case(rng, [(0, 3)], window=4, capacity=4, init_pos=pos, init_k=np.zeros((4, 1, 3)),
                    init_v=np.zeros((4, 1, 3)))
    assert _run_case(exe, tmp_path, t, "prefill", "ring_at_int64_max") == ("err", "positions")
    # sink_tokens is a size that comes from a value: n_sink + C must not overflow int64 or size_t
    t = _trace_case(rng, [(0, 3)], window=4, capacity=2 ** 62, sink_tokens=np.array(top))
    assert _run_case(exe, tmp_path, t, "prefill", "huge_sinks") == ("err", "argument")


def test_c_port_output_is_standard_safetensors(built, tmp_path):
    """What the C port writes is readable by the safetensors package (and by our strict reader)."""
    stn = pytest.importorskip("safetensors.numpy")
    _, exe, suite = built
    m = VX.load_suite(suite).manifest
    for op in ("attention", "decode"):
        c = next(c for c in m["cases"] if c["op"] == op and c["expect"] == "valid")
        out = tmp_path / f"{c['id']}.out.safetensors"
        subprocess.run([exe, os.path.join(suite, c["file"]), str(out)], check=True)
        theirs = stn.load_file(str(out))
        ours, dtypes, meta = ST.read(out)
        assert meta["input_digest"] == c["input_digest"]
        for n in ours:
            np.testing.assert_array_equal(theirs[n], ours[n])


#: Known bugs planted into the C source: variant -> (exact original text, its buggy replacement).
#: Each is one of the suite's known-wrong variants (docs/conformance.md, "Bugs the vectors catch").
PLANTED = {
    "window_plus_1": ("p - j > P->left) return 0;", "p - j > P->left + P->has_window) return 0;"),
    "sink_scaled": ('if (!isfinite(P->sinks[h])) reject("sinks", "sinks must be finite");',
                    'if (!isfinite(P->sinks[h])) reject("sinks", "sinks must be finite"); '
                    'else P->sinks[h] *= P->scale;'),
    "sink_value_row": ("if (sink) sum += exp(sink_shift);",
                       "if (sink) { sum += exp(sink_shift); for (d = 0; d < H->D; d++) o[d] += exp(sink_shift); }"),
    "softcap_before_scale": ("s[i] = c * tanh(s[i] / c);", "s[i] = P->scale * (c * tanh(s[i] / P->scale / c));"),
    "rollback_keeps_slots": ("for (p = lo; p < R->next; p++) R->pos[slot_of(R, p)] = -1;", "(void)lo;"),
    "rollback_beyond_limit": ("if (!ring_can_roll_back(R, n))", "if (!ring_can_roll_back(R, n) && 0)"),
    # the window family (spec 1.1 part two)
    "two_sided_left_minus_1": ("p - j > P->left) return 0;", "p - j >= P->left) return 0;"),
    "two_sided_right_plus_1": ("j - p > P->right) return 0;", "j - p > P->right + 1) return 0;"),
    "two_sided_as_causal": ("if (P->right >= 0 && j - p > P->right) return 0;", "if (j > p) return 0;"),
    "chunked_as_sliding": ("if (P->chunk && j < (p / P->chunk) * P->chunk) return 0;",
                           "if (P->chunk && p - j >= P->chunk) return 0;"),
    "chunk_boundary_minus_1": ("j < (p / P->chunk) * P->chunk) return 0;", "j < (p / P->chunk) * P->chunk - 1) return 0;"),
    "sink_tokens_dropped": ("if (j < P->n_sink && j <= p) return 1;", ""),
    "sink_tokens_plus_1": ("if (j < P->n_sink && j <= p) return 1;", "if (j <= P->n_sink && j <= p) return 1;"),
}


@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_c_port_with_a_planted_bug_fails(built, tmp_path, bug):
    """The same C code with one known bug must fail every core case that the variant applies to
    (valid cases, and the negative rollback cases a port without the limit accepts)."""
    tmp, _, suite = built
    old, new = PLANTED[bug]
    with open(SRC) as f:
        assert f.read().count(old) == 1, f"the text to patch for {bug} is not in {SRC} exactly once"
    exe = _build(str(tmp_path), lambda t: t.replace(old, new), "swaref_port_" + bug)
    m = VX.load_suite(suite).manifest
    must = {c["id"] for c in m["cases"] if c.get("wrong_variants", {}).get(bug, {}).get("applicable")}
    assert must, f"the core suite has no case for {bug}"
    lines = []
    code = VX.check_suite(suite, exec_cmd=f"{exe} {{in}} {{out}}", out=lines.append, only=must)
    assert code == 1
    verdicts = [l for l in lines if l.split()[0] in ("PASS", "FAIL", "MISSING", "SKIP")]
    assert len(verdicts) == len(must) and all(l.startswith("FAIL") for l in verdicts), \
        [l for l in verdicts if not l.startswith("FAIL")]
    if bug != "rollback_beyond_limit":   # its cases are negative: accepting is the failure
        assert any(f"matches known wrong variant {bug}" in l for l in verdicts), verdicts


def test_c_port_reports_unreadable_input(built, tmp_path):
    """A truncated case file makes the port exit 1; the runner's --exec path turns that into FAIL."""
    _, exe, suite = built
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00")
    r = subprocess.run([exe, str(bad), str(tmp_path / "x.out.safetensors")], capture_output=True, text=True)
    assert r.returncode == 1 and "too short" in r.stderr


# ---------------------------------------------------------------------------
# Spec 1.1 features on hand-written case files (docs/conformance.md, "Inputs added by
# spec 1.1"), judged against swaref's NumPy reference.  These do not need the 1.1 golden
# vectors, and they also reach inputs the suites do not hold (scores beyond float64).
# ---------------------------------------------------------------------------

import json  # noqa: E402

import swaref  # noqa: E402
from oracle import dense_attention_f64  # noqa: E402


def _run_case(exe, tmp_path, tensors, op, name="case"):
    """Write a case file, run the port on it -> ("out", {name: array}) or ("err", kind)."""
    case = tmp_path / f"{name}.safetensors"
    out = tmp_path / f"{name}.out.safetensors"
    err = tmp_path / f"{name}.err.json"
    for p in (out, err):
        if p.exists():
            p.unlink()
    ST.write(case, tensors, metadata={"op": op, "input_digest": "0" * 64})
    r = subprocess.run([exe, str(case), str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert out.exists() != err.exists(), "the port must write exactly one of .out and .err.json"
    if err.exists():
        return "err", json.loads(err.read_text())["kind"]
    return "out", ST.read(out)[0]


def _attention_case(rng, T=6, S=9, Hq=4, Hkv=2, D=5, window=4, mag=1.0, **extra):
    q = rng.standard_normal((T, Hq, D)) * mag
    k = rng.standard_normal((S, Hkv, D)) * mag
    v = rng.standard_normal((S, Hkv, D))
    k_pos = np.arange(S, dtype=np.int64)
    t = {"q": q, "k": k, "v": v, "k_pos": k_pos, "q_pos": k_pos[S - T:].copy()}
    if window is not None:
        t["window"] = np.array(window, dtype=np.int64)
    t.update(extra)
    return t


def _reference(t):
    return swaref.attention(t["q"], t["k"], t["v"], window=int(t["window"]) if "window" in t else None,
                            q_pos=t["q_pos"], k_pos=t["k_pos"],
                            scale=float(t["scale"]) if "scale" in t else None,
                            softcap=float(t["softcap"]) if "softcap" in t else None,
                            sinks=t.get("sinks"))


@pytest.mark.parametrize("variant", ["softcap", "sinks", "softcap_scaled", "sinks_dominant", "window1"])
def test_c_port_softcap_and_sinks_match_the_reference(built, tmp_path, variant):
    _, exe, _ = built
    rng = np.random.default_rng(11)
    extra = {
        "softcap": {"softcap": np.array(0.7)},
        "sinks": {"sinks": rng.standard_normal(4) * 2},
        "softcap_scaled": {"softcap": np.array(3.0), "scale": np.array(2.5)},
        "sinks_dominant": {"sinks": np.array([30.0, -30.0, 5.0, 0.0])},
        "window1": {"sinks": np.array([0.0, 1.0, -1.0, 2.0]), "window": np.array(1, dtype=np.int64)},
    }[variant]
    t = _attention_case(rng, mag=3.0, **extra)
    kind, res = _run_case(exe, tmp_path, t, "attention")
    assert kind == "out", res
    np.testing.assert_allclose(res["out"], _reference(t), rtol=0, atol=1e-13)


@pytest.mark.parametrize("variant", ["plain", "sinks", "softcap", "negative_scale", "sink_wins"])
def test_c_port_scores_beyond_float64_stay_finite(built, tmp_path, variant):
    """Spec 1.0.1, finite input -> finite output, where scale * q.k overflows float64."""
    _, exe, _ = built
    rng = np.random.default_rng(7)
    extra = {"plain": {}, "sinks": {"sinks": np.array([1e300, -2.0, 0.5, 3.0])},
             "softcap": {"softcap": np.array(20.0)}, "negative_scale": {"scale": np.array(-1e10)},
             "sink_wins": {"scale": np.array(-1e100), "sinks": np.array([0.0, 1.0, 2.0, 3.0])}}[variant]
    t = _attention_case(rng, mag=1e160, **extra)
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.einsum("thd,shd->ths", t["q"][:, :2], t["k"][:, :1])).all()
    want = _reference(t)
    assert np.isfinite(want).all()
    kind, res = _run_case(exe, tmp_path, t, "attention")
    assert kind == "out", res
    assert np.isfinite(res["out"]).all()
    np.testing.assert_allclose(res["out"], want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("extra, kind", [
    ({"softcap": np.array(0.0)}, "softcap"),
    ({"softcap": np.array(-1.0)}, "softcap"),
    ({"softcap": np.array(np.inf)}, "softcap"),
    ({"softcap": np.array(np.nan)}, "softcap"),
    ({"sinks": np.zeros(3)}, "sinks"),
    ({"sinks": np.array([0.0, np.nan, 0.0, 0.0])}, "sinks"),
    ({"sinks": np.array([0.0, 0.0, -np.inf, 0.0])}, "sinks"),
    ({"softcap": np.array(5.0), "sinks": np.zeros(4)}, "argument"),
])
def test_c_port_rejects_bad_softcap_and_sinks(built, tmp_path, extra, kind):
    _, exe, _ = built
    t = _attention_case(np.random.default_rng(0), **extra)
    assert _run_case(exe, tmp_path, t, "attention") == ("err", kind)


def _reference_trace(t):
    """The trace of a case through swaref's cache API -> {out, cache_pos, cache_k, cache_v} or an error kind."""
    window = int(t["window"]) if "window" in t else None
    q, k, v = t["q"], t["k"], t["v"]
    cache = swaref.RollingBufferCache(window, k.shape[1], k.shape[2], np.float64, capacity=int(t["capacity"]))
    if "init_pos" in t:
        swaref.load_state(cache, t["init_pos"], t["init_k"], t["init_v"])
    opts = {"softcap": float(t["softcap"]) if "softcap" in t else None, "sinks": t.get("sinks")}
    outs, pos, ks, vs, a = [], [], [], [], 0
    try:
        for op, n in t["steps"]:
            nxt = int(t["start"]) if cache.next_position is None else cache.next_position
            if op == 0:
                outs.append(swaref.prefill(q[a:a + n], k[a:a + n], v[a:a + n], cache, chunk_size=int(n),
                                           start=nxt, **opts))
                a += n
            elif op == 1:
                outs.append(swaref.decode_step(q[a:a + 1], k[a:a + 1], v[a:a + 1], cache, start=nxt, **opts))
                a += 1
            else:
                swaref.rollback(cache, int(n))
            pos.append(cache.positions.copy())
            ks.append(cache.k.copy())
            vs.append(cache.v.copy())
    except swaref.SwarefError as e:
        return e.kind
    return {"out": np.concatenate(outs), "cache_pos": np.stack(pos), "cache_k": np.stack(ks),
            "cache_v": np.stack(vs)}


def _trace_case(rng, steps, window=4, capacity=6, Hq=2, Hkv=1, D=3, start=0, **extra):
    steps = np.array(steps, dtype=np.int64).reshape(-1, 2)
    N = int(sum(n if op == 0 else op == 1 for op, n in steps))
    t = {"q": rng.standard_normal((N, Hq, D)), "k": rng.standard_normal((N, Hkv, D)),
         "v": rng.standard_normal((N, Hkv, D)), "start": np.array(start, dtype=np.int64),
         "capacity": np.array(capacity, dtype=np.int64), "steps": steps,
         "schedule": np.array([n for op, n in steps if op == 0], dtype=np.int64),
         "n_decode": np.array(int(sum(op == 1 for op, _ in steps)), dtype=np.int64)}
    if window is not None:
        t["window"] = np.array(window, dtype=np.int64)
    t.update(extra)
    return t


def _compare_trace(got, want):
    np.testing.assert_array_equal(got["cache_pos"], want["cache_pos"])
    held = want["cache_pos"] >= 0
    np.testing.assert_array_equal(got["cache_k"][held], want["cache_k"][held])
    np.testing.assert_array_equal(got["cache_v"][held], want["cache_v"][held])
    np.testing.assert_allclose(got["out"], want["out"], rtol=0, atol=1e-13)


def _random_program(rng, window, capacity, n_ops=14, reckless=False):
    """Chunks, decodes and rollbacks; rollbacks within the spec's limit (or any, if reckless)."""
    steps, n_seen, n_held = [], 0, 0
    for _ in range(n_ops):
        r = rng.random()
        if r < 0.3 and n_seen:
            if reckless:
                n = int(rng.integers(0, n_seen + 2))
            else:
                evicted = n_held < n_seen and window is not None and window > 1
                lim = max(0, min(n_seen, n_held - window + 1)) if evicted else n_seen
                n = int(rng.choice([rng.integers(0, lim + 1), n_seen]))
            steps.append((2, n))
            n_seen -= min(n, n_seen)
            n_held -= min(n, n_held)
        else:
            n = 1 if r < 0.6 else int(rng.integers(1, capacity + 3))
            steps.append((1 if r < 0.6 else 0, n))
            n_seen += n
            n_held = min(n_held + n, capacity)
    return steps


@pytest.mark.parametrize("seed", range(12))
def test_c_port_traces_with_slack_and_rollback_match_the_reference(built, tmp_path, seed):
    _, exe, _ = built
    rng = np.random.default_rng(100 + seed)
    window = int(rng.choice([1, 2, 3, 4]))
    capacity = window + int(rng.integers(0, 4))
    extra = [{}, {"softcap": np.array(1.5)}, {"sinks": rng.standard_normal(2)}][seed % 3]
    t = _trace_case(rng, _random_program(rng, window, capacity, reckless=seed >= 8), window=window,
                    capacity=capacity, start=int(rng.integers(0, 20)), **extra)
    want = _reference_trace(t)
    kind, got = _run_case(exe, tmp_path, t, "decode")
    if isinstance(want, str):
        assert (kind, got) == ("err", want), t["steps"].tolist()
    else:
        assert kind == "out", got
        _compare_trace(got, want)


def test_c_port_rollback_worked_example(built, tmp_path):
    """docs/spec.md rule 4: W = 4, C = 6, positions 0..9 written: max_rollback = 3; 4 is refused,
    and so is 2 without slack (C = W = 4), where only the newest token can go back."""
    _, exe, _ = built
    rng = np.random.default_rng(3)
    for capacity, n, ok in ((6, 3, True), (6, 4, False), (6, 10, True), (4, 1, True), (4, 2, False)):
        t = _trace_case(rng, [(0, 10), (2, n), (1, 1)], window=4, capacity=capacity)
        want = _reference_trace(t)
        kind, got = _run_case(exe, tmp_path, t, "decode")
        if ok:
            assert kind == "out", got
            _compare_trace(got, want)
            assert (got["cache_pos"][1] == -1).sum() == min(n, capacity) - (capacity - min(10, capacity))
        else:
            assert want == "rollback" and (kind, got) == ("err", "rollback")


def test_c_port_rollback_of_everything_after_a_wrap(built, tmp_path):
    """Rolling back all n_seen tokens of a wrapped ring leaves it empty (spec rule 4), n_held = 0:
    what follows behaves as on a fresh cache.  (swaref's reference, swaref/cache.py rollback, sets
    n_held = n_held - n, here 6 - 10 = -4, and then refuses the rollback of 2 below; the oracle
    here is therefore the fresh cache, which has the same history.)"""
    _, exe, _ = built
    rng = np.random.default_rng(9)
    t = _trace_case(rng, [(0, 10), (2, 10), (0, 3), (2, 2), (1, 1), (1, 1)], window=4, capacity=6)
    tail = _trace_case(rng, [(0, 3), (2, 2), (1, 1), (1, 1)], window=4, capacity=6)
    for name in ("q", "k", "v"):
        tail[name] = t[name][10:]
    want = _reference_trace(tail)
    kind, got = _run_case(exe, tmp_path, t, "decode")
    assert kind == "out", got
    _compare_trace({"out": got["out"][10:], "cache_pos": got["cache_pos"][2:], "cache_k": got["cache_k"][2:],
                    "cache_v": got["cache_v"][2:]}, want)
    assert (got["cache_pos"][1] == -1).all()


def test_c_port_rollback_into_a_loaded_ring(built, tmp_path):
    """A loaded ring counts as written, nothing evicted (swaref's load_state): it may all go back."""
    _, exe, _ = built
    rng = np.random.default_rng(5)
    C, W = 5, 3
    init_pos = np.array([10, 11, 7, 8, 9], dtype=np.int64)
    for steps in ([(2, 5), (0, 3)], [(2, 4), (1, 1), (1, 1)], [(1, 1), (2, 6)], [(1, 1), (2, 2), (1, 1)]):
        t = _trace_case(rng, steps, window=W, capacity=C, start=12, init_pos=init_pos,
                        init_k=rng.standard_normal((C, 1, 3)), init_v=rng.standard_normal((C, 1, 3)))
        want = _reference_trace(t)
        kind, got = _run_case(exe, tmp_path, t, "decode")
        if isinstance(want, str):
            assert (kind, got) == ("err", want), steps
        else:
            assert kind == "out", (steps, got)
            _compare_trace(got, want)


@pytest.mark.parametrize("steps, capacity, window, kind", [
    ([(0, 3)], 3, 4, "cache"),                       # capacity below the window
    ([(0, 3), (2, 4)], 6, 4, "rollback"),            # more than was written
    ([(0, 9), (2, 4)], 6, 4, "rollback"),            # beyond n_held - W + 1 = 3
    ([(0, 3), (1, 2)], 6, 4, "schedule"),            # a malformed program: decode of two tokens,
    ([(0, 3), (2, -1)], 6, 4, "schedule"),           # a negative rollback,
    ([(0, 3), (3, 1)], 6, 4, "schedule"),            # an unknown op,
    ([(0, 0), (1, 1)], 6, 4, "schedule"),            # an empty chunk
    ([(0, 4), (1, 1)], 4, None, "cache"),             # a full-attention cache that is full
    ([(0, 3)], 2 ** 62, None, "argument"),            # a cache whose size does not fit size_t,
    ([(0, 3)], 2 ** 40, 4, "argument"),               # one that cannot be allocated (spec rule 4)
])
def test_c_port_rejects_bad_traces(built, tmp_path, steps, capacity, window, kind):
    _, exe, _ = built
    t = _trace_case(np.random.default_rng(1), steps, window=window, capacity=capacity)
    assert _run_case(exe, tmp_path, t, "decode") == ("err", kind)


# --- the window family (spec 1.1 part two): kept sink tokens, two-sided, chunked -------------------------

WINDOWS = {
    "sinks2": {"window": np.array(3, dtype=np.int64), "sink_tokens": np.array(2, dtype=np.int64)},
    "sinks_eq_window": {"window": np.array(3, dtype=np.int64), "sink_tokens": np.array(3, dtype=np.int64)},
    "two_sided": {"window": None, "two_sided": np.array([2, 1], dtype=np.int64)},
    "two_sided_left_unbounded": {"window": None, "two_sided": np.array([-1, 2], dtype=np.int64)},
    "two_sided_right_unbounded": {"window": None, "two_sided": np.array([1, -1], dtype=np.int64)},
    "two_sided_full": {"window": None, "two_sided": np.array([-1, -1], dtype=np.int64)},
    "two_sided_causal": {"window": None, "two_sided": np.array([2, 0], dtype=np.int64)},
    "chunked": {"window": None, "attention_chunk": np.array(3, dtype=np.int64)},
    "chunk1": {"window": None, "attention_chunk": np.array(1, dtype=np.int64)},
}


@pytest.mark.parametrize("extra", [{}, {"softcap": np.array(1.5)}, {"sinks": np.array([0.5, -1.0, 2.0, 0.0])}],
                         ids=["plain", "softcap", "sinks"])
@pytest.mark.parametrize("name", sorted(WINDOWS))
def test_c_port_window_family_matches_the_reference(built, tmp_path, name, extra):
    """Attention under every kind of window, with positions that skip and start past 0 (the sinks then
    partly absent), against swaref's reference."""
    _, exe, _ = built
    rng = np.random.default_rng(sum(map(ord, name)))
    t = _attention_case(rng, T=10, S=10, mag=2.0, **WINDOWS[name], **extra)
    t["k_pos"] = t["q_pos"] = np.array([1, 2, 3, 5, 6, 7, 8, 11, 12, 13], dtype=np.int64)
    want = swaref.attention(t["q"], t["k"], t["v"], window=window_of(t), q_pos=t["q_pos"], k_pos=t["k_pos"],
                            softcap=float(t["softcap"]) if "softcap" in t else None, sinks=t.get("sinks"))
    kind, res = _run_case(exe, tmp_path, t, "attention")
    assert kind == "out", res
    np.testing.assert_allclose(res["out"], want, rtol=0, atol=1e-13)


@pytest.mark.parametrize("extra, op, kind", [
    ({"window": None, "two_sided": np.array([-2, 1], dtype=np.int64)}, "attention", "window"),
    ({"window": None, "two_sided": np.array([1, 2, 3], dtype=np.int64)}, "attention", "window"),
    ({"two_sided": np.array([1, 1], dtype=np.int64)}, "attention", "window"),              # and a window
    ({"window": None, "attention_chunk": np.array(0, dtype=np.int64)}, "attention", "window"),
    ({"attention_chunk": np.array(4, dtype=np.int64)}, "attention", "window"),             # and a window
    ({"sink_tokens": np.array(-1, dtype=np.int64)}, "attention", "window"),
    ({"window": None, "sink_tokens": np.array(1, dtype=np.int64)}, "attention", "window"),  # without a window
    ({"window": None, "two_sided": np.array([0, 0], dtype=np.int64)}, "gaps", "no_visible_key"),
    ({"window": None, "attention_chunk": np.array(2, dtype=np.int64)}, "gaps", "no_visible_key"),
])
def test_c_port_rejects_bad_windows(built, tmp_path, extra, op, kind):
    _, exe, _ = built
    t = _attention_case(np.random.default_rng(0), **extra)
    if op == "gaps":                 # keys at 0..8; a query at 11 (two-sided (0, 0)) or 10 (chunk 10..11)
        t["q_pos"] = np.array([3, 4, 5, 6, 7, 11 if "two_sided" in t else 10], dtype=np.int64)
    assert _run_case(exe, tmp_path, t, "attention") == ("err", kind)


@pytest.mark.parametrize("steps, extra, capacity, kind", [
    ([(0, 3)], {"window": None, "two_sided": np.array([2, 1], dtype=np.int64)}, 6, "window"),   # a cache is causal
    ([(0, 3)], {"window": None, "two_sided": np.array([-1, -1], dtype=np.int64)}, 6, "window"),
    ([(0, 3)], {"window": None, "attention_chunk": np.array(4, dtype=np.int64)}, 3, "cache"),
    ([(0, 10), (2, 3)], {"window": None, "attention_chunk": np.array(4, dtype=np.int64)}, 4, "rollback"),
    ([(0, 10), (2, 2)], {"window": 3, "sink_tokens": np.array(2, dtype=np.int64)}, 3, "rollback"),
])
def test_c_port_rejects_bad_window_traces(built, tmp_path, steps, extra, capacity, kind):
    _, exe, _ = built
    extra = dict(extra)
    window = extra.pop("window", 4)
    t = _trace_case(np.random.default_rng(1), steps, window=window, capacity=capacity, **extra)
    assert _run_case(exe, tmp_path, t, "decode") == ("err", kind)


def _window_trace_oracle(t):
    """Brute force, independent of swaref and of the port: per token, dense float64 attention over the keys
    rule 1 lets it see among those written and not rolled back; the slot positions after each step by
    rule 4's slot rule (sink positions in their own slots, the last min(written, C) ring positions)."""
    n_sink, C = int(t.get("sink_tokens", 0)), int(t["capacity"])
    w = window_of(t)
    keys, outs, states, held_ring = {}, [], [], 0
    nxt, a = int(t["start"]), 0
    for op, n in t["steps"]:
        if op == 2:
            for p in range(nxt - n, nxt):
                keys.pop(p, None)
            held_ring = max(0, held_ring - sum(p >= n_sink for p in range(nxt - n, nxt)))
            nxt -= n
        else:
            new = {nxt + i: (t["k"][a + i], t["v"][a + i]) for i in range(n)}
            for i in range(n):
                cand = {**keys, **{p: kv for p, kv in new.items() if p <= nxt + i}}
                kp = sorted(cand)
                outs.append(dense_attention_f64(t["q"][a + i:a + i + 1], np.stack([cand[p][0] for p in kp]),
                                                np.stack([cand[p][1] for p in kp]), [nxt + i], kp, w,
                                                softcap=float(t["softcap"]) if "softcap" in t else None,
                                                sinks=t.get("sinks")))
            keys.update(new)
            held_ring = min(held_ring + sum(p >= n_sink for p in new), C)
            nxt, a = nxt + n, a + n
            keys = {p: kv for p, kv in keys.items() if p < n_sink or p >= nxt - held_ring}
        pos = np.full(n_sink + C, -1)
        for p in keys:
            pos[p if p < n_sink else n_sink + (p - n_sink) % C] = p
        states.append(pos)
    return np.concatenate(outs), np.stack(states)


@pytest.mark.parametrize("seed", range(8))
def test_c_port_window_family_traces_match_a_brute_force(built, tmp_path, seed):
    """Kept-sink and chunked caches through chunks, decode tokens and rollbacks within rule 4's limit."""
    from swaref.conformance.cases_windows import random_program, rollback_limit
    _, exe, _ = built
    rng = np.random.default_rng(300 + seed)
    if seed % 2:
        extra, spec = {"attention_chunk": np.array(3 + seed % 3, dtype=np.int64)}, VX.CaseSpec(
            "decode", window=None, chunk=3 + seed % 3)
    else:
        extra, spec = {"sink_tokens": np.array(1 + seed % 3, dtype=np.int64)}, VX.CaseSpec(
            "decode", window=3, sink_tokens=1 + seed % 3)
    ring = spec.chunk or spec.window
    capacity = ring + seed % 3
    steps = random_program(rng, spec, capacity, rounds=3)
    assert all(n <= rollback_limit(spec, capacity, 0, steps[:i]) for i, (op, n) in enumerate(steps) if op == 2)
    soft = [{}, {"softcap": np.array(2.0)}, {"sinks": rng.standard_normal(2)}][seed % 3]
    t = _trace_case(rng, steps, window=spec.window, capacity=capacity, **extra, **soft)
    out, states = _window_trace_oracle(t)
    kind, got = _run_case(exe, tmp_path, t, "decode")
    assert kind == "out", got
    np.testing.assert_array_equal(got["cache_pos"], states)
    np.testing.assert_allclose(got["out"], out, rtol=0, atol=1e-12)
