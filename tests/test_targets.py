"""One wheel for every CPU: the kernel's targets (setup.py, swaref/_cpu.py, swaref/_core.py).

* the CPU's features, read with cpuid and xgetbv, equal Linux's /proc/cpuinfo flags (an
  independent reading), and a CPU whose OS does not save the zmm registers gets no AVX-512;
* the choice: the best target the CPU runs; SWAREF_TARGET forces one, and one that is not
  built, unknown, or beyond the CPU is refused with a SwarefError of kind "backend";
* the instructions: the v2 module holds no AVX (VEX) or AVX-512 (EVEX, zmm) instruction, the
  v3 module no AVX-512 one, counted in objdump's disassembly (the v4 module, which must hold
  them, shows the count can fail);
* every target this CPU runs, forced in its own process, equals a dense float64 softmax and
  is bitwise chunk-invariant within itself; across targets only the last bits may differ;
* a single-target swaref/_core.<ext> from before targets is refused, not silently used.

.ci/run runs tests/test_core.py (and this file) once per runnable target with SWAREF_TARGET.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import swaref
from swaref import _cpu
from swaref.cli import main
from swaref.errors import SwarefError

X86 = _cpu.machine() == "x86_64"
BUILT = _cpu.built()
SRC_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(swaref.__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))


def _env(**extra):
    """The environment of a child process that imports the same swaref as this one."""
    env = {k: v for k, v in os.environ.items() if k != _cpu.ENV_FORCE}
    env["PYTHONPATH"] = os.pathsep.join([SRC_ROOT, TESTS] + [p for p in [env.get("PYTHONPATH")] if p])
    env.update(extra)
    return env


# ==============================================================================================
# The CPU's features

def _proc_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.skipif(not (X86 and sys.platform.startswith("linux")), reason="x86 Linux: /proc/cpuinfo flags")
def test_features_equal_linux_cpuinfo_flags():
    """Linux reads cpuid itself and clears a feature whose registers it does not save, so its
    flags are an independent reading of what swaref must find."""
    flags = _proc_flags()
    have = _cpu.cpu()["features"]
    disagree = [(f.name, f.name in have, f.cpuinfo in flags) for f in _cpu.X86_FEATURES
                if (f.name in have) != (f.cpuinfo in flags)]
    assert not disagree, f"(feature, swaref, /proc/cpuinfo) disagree: {disagree}"


class FakeCPU:
    """cpuid and xgetbv of a made-up CPU: bits set per (leaf, subleaf, register)."""

    def __init__(self, features, xcr0=0xE7, max_basic=0xD, osxsave=True):
        self.regs = {}
        self.xcr0 = xcr0
        self.xgetbv_calls = 0
        self.set(0, 0, 0, max_basic)
        self.set(0x80000000, 0, 0, 0x80000008)
        self.set(7, 0, 0, 1)                                  # leaf 7 has subleaves 0 and 1
        byname = {f.name: f for f in _cpu.X86_FEATURES}
        for name in features:
            f = byname[name]
            self.set(f.leaf, f.subleaf, f.reg, self.get(f.leaf, f.subleaf, f.reg) | 1 << f.bit)
        if osxsave:
            self.set(1, 0, 2, self.get(1, 0, 2) | 1 << 27)

    def get(self, leaf, sub, reg):
        return self.regs.get((leaf, sub), [0, 0, 0, 0])[reg]

    def set(self, leaf, sub, reg, value):
        self.regs.setdefault((leaf, sub), [0, 0, 0, 0])[reg] = value

    def cpuid(self, leaf, sub):
        return tuple(self.regs.get((leaf, sub), [0, 0, 0, 0]))

    def xgetbv(self, index):
        assert index == 0
        self.xgetbv_calls += 1
        return self.xcr0


ZEN4 = _cpu.X86_64_V4 + ("avx512_bf16", "avx512_vnni", "gfni")


def test_feature_decoding_of_a_made_up_cpu():
    got, xcr0 = _cpu.x86_features(FakeCPU(ZEN4).cpuid, FakeCPU(ZEN4).xgetbv)
    assert got == set(ZEN4) and xcr0 == 0xE7
    assert _cpu.runnable({"v2": "", "v3": "", "v4": ""}, got) == ["v4", "v3", "v2"]


@pytest.mark.parametrize("xcr0, osxsave, lost", [
    (0x07, True, "avx512"),        # the OS saves ymm, not zmm: AVX-512 must not run
    (0x03, True, "avx"),           # not even ymm: AVX, AVX2, FMA and AVX-512 must not run
    (0xE7, False, "avx"),          # no OSXSAVE: xgetbv itself is not allowed
])
def test_features_need_the_os_to_save_their_registers(xcr0, osxsave, lost):
    """The same CPU bits with less OS support lose exactly the features of that state (the
    twin of the test above: the check of XCR0 is what removes them)."""
    cpu = FakeCPU(ZEN4, xcr0=xcr0, osxsave=osxsave)
    got, _ = _cpu.x86_features(cpu.cpuid, cpu.xgetbv)
    dropped = {f.name for f in _cpu.X86_FEATURES if f.state == "avx512" or (lost == "avx" and f.state == "avx")}
    assert got == set(ZEN4) - dropped
    assert cpu.xgetbv_calls == (1 if osxsave else 0)
    assert "v4" not in _cpu.runnable({"v2": "", "v3": "", "v4": ""}, got)
    assert ("v3" in _cpu.runnable({"v3": ""}, got)) == (lost == "avx512")


def test_macos_avx512_state_is_given_on_first_use():
    cpu = FakeCPU(ZEN4, xcr0=0x07)
    assert set(_cpu.X86_64_V4) <= _cpu.x86_features(cpu.cpuid, cpu.xgetbv, darwin=True)[0]


def test_leaves_beyond_the_maximum_are_not_read():
    """A CPU whose maximum basic leaf is 1 reports nothing of leaf 7, whatever the registers say."""
    cpu = FakeCPU(ZEN4, max_basic=1)
    got, _ = _cpu.x86_features(cpu.cpuid, cpu.xgetbv)
    assert not got & {f.name for f in _cpu.X86_FEATURES if f.leaf == 7}
    assert "avx" in got and "avx2" not in got


# ==============================================================================================
# The choice

V3_CPU = frozenset(_cpu.X86_64_V3)
THREE = {"v2": "/x/v2.so", "v3": "/x/v3.so", "v4": "/x/v4.so"}


@pytest.mark.skipif(not X86, reason="x86 target names")
def test_choose_the_best_runnable_or_the_forced_one():
    assert _cpu.choose(THREE, frozenset(_cpu.X86_64_V4)) == "v4"
    assert _cpu.choose(THREE, V3_CPU) == "v3"
    assert _cpu.choose(THREE, V3_CPU, "auto") == "v3"
    assert _cpu.choose(THREE, V3_CPU, "v2") == "v2"
    assert _cpu.choose({"v2": "/x/v2.so"}, V3_CPU) == "v2"


@pytest.mark.skipif(not X86, reason="x86 target names")
@pytest.mark.parametrize("targets, features, forced, words", [
    (THREE, V3_CPU, "v4", ["SWAREF_TARGET=v4", "cannot run", "avx512f", "it runs: v3, v2"]),
    ({"v2": "/x/v2.so"}, V3_CPU, "v3", ["SWAREF_TARGET=v3", "not built", "built: v2"]),
    (THREE, V3_CPU, "avx9", ["SWAREF_TARGET must be one of", "v2", "'avx9'"]),
    (THREE, frozenset({"sse3"}), "", ["none of the compiled kernel targets", "v2 needs", "sse4_2"]),
    ({"native": "/nowhere/native.so"}, V3_CPU, "", ["native", "native.json", "missing"]),
])
def test_refusals_name_what_was_asked_and_why(targets, features, forced, words):
    with pytest.raises(SwarefError) as e:
        _cpu.choose(targets, features, forced)
    assert e.value.kind == "backend"
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_native_runs_where_its_recorded_features_are(tmp_path):
    so = tmp_path / "native.cpython-311-x86_64-linux-gnu.so"
    (tmp_path / "native.json").write_text(json.dumps({"requires": list(_cpu.X86_64_V4)}))
    assert _cpu.runnable({"native": str(so), "v3": ""}, frozenset(_cpu.X86_64_V4)) == ["native", "v3"]
    assert _cpu.runnable({"native": str(so), "v3": ""}, V3_CPU) == ["v3"]


def test_this_process_runs_the_forced_or_the_best_target():
    """Under .ci/run's loop (SWAREF_TARGET set) this proves the loop tests what it says."""
    from swaref import _backend
    core = _backend._core()
    name = _cpu.target_of(core)
    forced = os.environ.get(_cpu.ENV_FORCE, "")
    runs = _cpu.runnable(BUILT, _cpu.cpu()["features"])
    assert name == (forced if forced not in ("", "auto") else runs[0])
    assert os.path.samefile(core.__file__, BUILT[name])


# ==============================================================================================
# The instructions in each module

PREFIXES = {0x66, 0x67, 0xF2, 0xF3, 0xF0, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65}


def count_vector_isa(disassembly):
    """{"vex": AVX/AVX2/FMA instructions, "evex": AVX-512 instructions, "zmm": lines naming a zmm
    register} in `objdump -d -w` output.  In 64-bit code the first byte after the legacy prefixes
    is 0xC4/0xC5 exactly for a VEX instruction and 0x62 for an EVEX one."""
    counts = {"vex": 0, "evex": 0, "zmm": 0}
    for line in disassembly.splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or not re.fullmatch(r"\s*[0-9a-f]+:", parts[0]):
            continue
        code = [int(b, 16) for b in parts[1].split()]
        while code and code[0] in PREFIXES:
            code = code[1:]
        if code and code[0] in (0xC4, 0xC5):
            counts["vex"] += 1
        elif code and code[0] == 0x62:
            counts["evex"] += 1
        counts["zmm"] += "%zmm" in parts[2]
    return counts


def test_counter_sees_each_encoding():
    """The counter on hand-written lines: SSE, VEX (with a 0x66 prefix before it is still not
    VEX: C5 must come first), EVEX, and a REX-prefixed SSE instruction."""
    text = "\n".join([
        "    10:\t0f 58 c1             \taddps  %xmm1,%xmm0",
        "    13:\tc5 f4 58 c2          \tvaddps %ymm2,%ymm1,%ymm0",
        "    17:\tc4 e2 75 a8 c2       \tvfmadd213ps %ymm2,%ymm1,%ymm0",
        "    1c:\t62 f1 74 48 58 c2    \tvaddps %zmm2,%zmm1,%zmm0",
        "    22:\t62 f1 74 28 58 c2    \tvaddps %ymm2,%ymm1,%ymm0",
        "    28:\t66 41 0f 58 c0       \taddpd  %xmm8,%xmm0",
        "0000000000001000 <f>:",
    ])
    assert count_vector_isa(text) == {"vex": 2, "evex": 2, "zmm": 1}


def _disassemble(path):
    if shutil.which("objdump") is None:
        pytest.skip("objdump is not installed")
    return subprocess.run(["objdump", "-d", "-w", path], capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(not X86, reason="x86 instruction encodings")
@pytest.mark.parametrize("target", ["v2", "v3", "v4"])
def test_each_module_holds_only_its_targets_instructions(target):
    if target not in BUILT:
        pytest.skip(f"target {target} is not built")
    c = count_vector_isa(_disassemble(BUILT[target]))
    if target == "v2":
        assert c == {"vex": 0, "evex": 0, "zmm": 0}
    elif target == "v3":
        assert c["evex"] == 0 and c["zmm"] == 0 and c["vex"] > 0
    else:                                     # the twin: the v4 module is full of them
        assert c["evex"] > 100 and c["zmm"] > 100


def test_target_modules_are_hidden_from_module_walkers():
    """swaref/_targets/ is a folder, not a package: pkgutil (tests/test_errors.py walks every
    module of swaref) never imports a target by name, and importing one by name fails cleanly
    (its init function is swaref._core's: an ImportError, before any of its code runs)."""
    import importlib
    import pkgutil
    names = [m.name for m in pkgutil.walk_packages(swaref.__path__, "swaref.")]
    assert "swaref._core" in names and not [n for n in names if "_targets" in n]
    for name in BUILT:
        with pytest.raises(ImportError, match="PyInit_"):
            importlib.import_module(f"swaref._targets.{name}")


# ==============================================================================================
# Every runnable target, forced in its own process

CHILD = r"""
import json, sys
import numpy as np
import swaref
from swaref import _backend, _cpu
from oracle import dense_attention_f64
core = _backend._core()
rng = np.random.default_rng(7)
out = {"target": _cpu.target_of(core), "cases": []}
for dtype in (np.float32, np.float64):
    T, Hq, Hkv, D, W = 150, 4, 2, 64, 40
    q, k, v = (rng.standard_normal((T, h, D)).astype(dtype) for h in (Hq, Hkv, Hkv))
    pos = np.arange(T, dtype=np.int64)
    one = swaref.attention(q, k, v, window=W, backend="cython", num_threads=2)
    cache = swaref.RollingBufferCache(W, Hkv, D, dtype=dtype)
    parts = [swaref.prefill(q[:97], k[:97], v[:97], cache, chunk_size=13, backend="cython")]
    parts += [swaref.decode_step(q[i:i + 1], k[i:i + 1], v[i:i + 1], cache, backend="cython") for i in range(97, T)]
    want = dense_attention_f64(q, k, v, pos, pos, W)
    out["cases"].append({"dtype": np.dtype(dtype).name, "chunked_bitwise": bool(np.array_equal(one, np.concatenate(parts))),
                         "err": float(np.max(np.abs(one - want))), "vmax": float(np.max(np.abs(v))),
                         "bits": one.astype(np.float64).tolist()})
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def per_target():
    runs = _cpu.runnable(BUILT, _cpu.cpu()["features"]) if BUILT else []
    if not runs:
        pytest.skip("no compiled target runs here")
    results = {}
    for t in runs:
        r = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, cwd=TESTS,
                           env=_env(SWAREF_TARGET=t), timeout=300)
        assert r.returncode == 0, r.stderr
        results[t] = json.loads(r.stdout)
    return results


def test_each_target_equals_the_dense_oracle_and_is_chunk_invariant(per_target):
    for t, res in per_target.items():
        assert res["target"] == t
        for case in res["cases"]:
            tol = (1e-5 if case["dtype"] == "float32" else 1e-12) * max(1.0, case["vmax"])
            assert case["err"] <= tol, (t, case["dtype"], case["err"])
            assert case["chunked_bitwise"], (t, case["dtype"])


def test_targets_differ_at_most_in_the_last_bits(per_target):
    """docs/performance.md: across targets, FMA contraction may change the last bits, nothing more."""
    names = list(per_target)
    for a in names[1:]:
        for ca, cb in zip(per_target[a]["cases"], per_target[names[0]]["cases"]):
            x, y = np.array(ca["bits"]), np.array(cb["bits"])
            eps = np.finfo(ca["dtype"]).eps
            assert np.max(np.abs(x - y)) <= 64 * eps * max(1.0, ca["vmax"]), (a, names[0], ca["dtype"])


def test_refused_target_fails_the_import_with_a_clear_error():
    # cwd=TESTS: run from the repository root, `python -c` would import the source tree's swaref,
    # which holds no compiled target when the package was installed (CI), not the installed one.
    r = subprocess.run([sys.executable, "-c", "from swaref import _core"], capture_output=True, text=True,
                       env=_env(SWAREF_TARGET="v9"), cwd=TESTS, timeout=120)
    assert r.returncode != 0
    assert "SwarefError: SWAREF_TARGET must be one of auto" in r.stderr and "'v9'" in r.stderr


@pytest.mark.skipif(not BUILT, reason="no compiled target")
def test_a_single_target_module_from_before_targets_is_refused(tmp_path):
    """Copy swaref with a target's module renamed swaref/_core.<ext>, as an old build left it: it
    shadows swaref/_core.py, so nothing chose it; the kernel's entry point must refuse it."""
    pkg = tmp_path / "swaref"
    shutil.copytree(os.path.dirname(swaref.__file__), pkg, ignore=shutil.ignore_patterns("__pycache__"))
    name, path = next(iter(BUILT.items()))
    suffix = os.path.basename(path)[len(name):]
    shutil.copyfile(path, pkg / f"_core{suffix}")
    code = ("import numpy as np, swaref\n"
            "q = np.ones((2, 1, 4))\n"
            "try:\n    swaref.attention(q, q, q, window=2, backend='cython')\n"
            "except swaref.SwarefError as e:\n    print(e.kind, '|', e)\n")
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), TESTS])
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("backend |") and "from before swaref built one per CPU target" in r.stdout, r.stdout


# ==============================================================================================
# Reporting

def test_swaref_info_reports_target_features_openmp_and_blas(capsys):
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    d = _cpu.describe()
    assert f"kernel target {d['target']} " in text
    assert f"OpenMP {'on' if d['openmp'] else 'off'}" in text and "BLAS (NumPy): " in text
    from swaref import _linear     # the projections' path, named from the module itself
    big = "swaref's GEMM" if _linear.isa() == "avx512" else "NumPy's BLAS"
    assert f"projections: swaref._linear, {_linear.isa()} kernels; more than 16 tokens: {big}" in text
    for f in d["uses"]:
        assert f in text
    assert main(["info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["target"] == d["target"]
    assert main(["info", "--runnable"]) == 0
    assert capsys.readouterr().out.split() == d["runnable"]


@pytest.mark.parametrize("preset", [None, "123", "0"])
def test_gomp_spincount_has_swaref_default_unless_the_user_set_it(preset):
    """import swaref sets GOMP_SPINCOUNT before any OpenMP module loads, unless it is set; the
    OpenMP runtime the kernel loads sees that value, and `swaref info` reports it."""
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    if preset is not None:
        env["GOMP_SPINCOUNT"] = preset
    code = ("import os, sys, swaref; v = os.environ['GOMP_SPINCOUNT']; "
            "assert not any(m in sys.modules for m in ('swaref._linear', 'swaref._core')), "
            "'an OpenMP module loaded before the default was set'; "
            "from swaref import _cpu; print(v); print([l for l in _cpu.report(_cpu.describe()) if 'GOMP' in l][0])")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(swaref.__file__))))
    assert r.returncode == 0, r.stderr
    value, line = r.stdout.splitlines()
    assert value == (swaref.GOMP_SPINCOUNT_DEFAULT if preset is None else preset)
    assert f"GOMP_SPINCOUNT={value} " in line


@pytest.mark.parametrize("preset,numpy_first", [(None, False), ("20", False), (None, True)])
def test_openblas_thread_timeout_has_swaref_default_unless_set_or_too_late(preset, numpy_first):
    """import swaref sets OPENBLAS_THREAD_TIMEOUT before NumPy (and so OpenBLAS) loads, unless the
    user set it; OpenBLAS reads it at load, so NumPy imported first keeps OpenBLAS's 2^28.  The value
    in force is asked of the loaded library, and `swaref info`'s BLAS line says it."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if preset is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = preset
    code = (("import numpy; " if numpy_first else "")
            + "import os, sys, swaref; from swaref import _cpu; "
            "print(os.environ['OPENBLAS_THREAD_TIMEOUT']); print(_cpu.openblas_thread_timeout()); print(_cpu.blas())")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(swaref.__file__))))
    assert r.returncode == 0, r.stderr
    value, in_force, line = r.stdout.splitlines()
    assert value == (preset or swaref.OPENBLAS_THREAD_TIMEOUT_DEFAULT)
    if in_force == "None":                             # not OpenBLAS (or too old to say): nothing to ask
        assert "idle workers" not in line, line
        return
    expected = _cpu.OPENBLAS_DEFAULT_TIMEOUT if numpy_first else int(value)
    assert int(in_force) == expected
    assert f"idle workers sleep after 2^{expected} ticks" in line, line


def test_version_names_the_kernel_target(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"swaref {swaref.__version__}; kernel target {_cpu.describe()['target']} ")


def test_the_openblas_core_is_the_librarys_own_answer():
    # Where NumPy's BLAS is OpenBLAS: asked from the loaded library, so a named OPENBLAS_CORETYPE shows,
    # and one OpenBLAS does not know (it then picks from the CPU) does not: the report does not echo
    # the variable.
    code = ("import numpy as np; np.ones((2, 2)) @ np.ones((2, 2)); from swaref._cpu import openblas_core, blas; "
            "print(openblas_core()); print(blas())")

    def ask(coretype):
        env = dict(os.environ, OPENBLAS_CORETYPE=coretype)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        return out.stdout.splitlines()
    core, line = ask("Haswell")
    if core == "None":
        assert "openblas" not in line.lower(), line        # another BLAS: nothing to ask
        return
    assert core == "Haswell" and "core Haswell (OPENBLAS_CORETYPE=Haswell)" in line, line
    assert ask("Bogus")[0] not in ("Bogus", "None")
