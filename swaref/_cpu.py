"""Which compiled kernel this CPU runs: the CPU's features, the targets built, and the choice.

setup.py compiles the kernel (swaref/_core.pyx, one generated C file) once per *target* into
``swaref/_targets/<target>.<ext>``; each file holds the same module, ``swaref._core``, compiled
for other instructions.  swaref/_targets/ is not a package, so module walkers do not see
those files (imported by name they would fail: their init function is swaref._core's); only
``load`` below loads one, by path, after the choice:

======== ============================================================ ==========================
target   compiled with                                                runs on
======== ============================================================ ==========================
v2       ``-march=x86-64-v2``: SSE4.2, POPCNT                          every x86-64 CPU since 2009
v3       ``-march=x86-64-v3``: AVX2, FMA, BMI2                         Haswell, Zen 1 and later
v4       ``-march=x86-64-v4 -mprefer-vector-width=512``: AVX-512       Skylake-X, Zen 4 and later
base     the compiler's default for the machine (aarch64: ARMv8-A)     every CPU of that machine
native   ``-march=native`` of the machine that built it                that machine (on x86 its
         (``SWAREF_TARGETS=native``, the one-module developer build)   features are recorded and
                                                                       checked; elsewhere trusted)
======== ============================================================ ==========================

``import swaref._core`` (swaref/_core.py) loads the highest target this CPU runs: on x86 the
features come from ``cpuid`` and, for the AVX and AVX-512 registers, from ``xgetbv`` (the CPU
may implement AVX-512 while the operating system does not save the zmm registers; then it must
not be used).  ``SWAREF_TARGET=v2|v3|v4|base|native`` forces one (a lower one, to compare or
to test); one the CPU cannot run, or that was not built, is refused with a SwarefError.
The choice is made once per process, at the first import.

Bits: within a target every call is bitwise chunk-invariant (docs/spec.md); across targets the
last bits may differ, because the compiler contracts ``a + x * y`` into an FMA on v3, v4 and
native and cannot on v2 (docs/performance.md, "Compiled targets").

setup.py loads this file on its own, before swaref is importable: nothing from swaref is
imported at module level.
"""
import importlib.machinery
import importlib.util
import json
import os
import platform
import sys
from dataclasses import dataclass

ENV_FORCE = "SWAREF_TARGET"
EAX, EBX, ECX, EDX = range(4)


@dataclass(frozen=True)
class Feature:
    """One x86 instruction-set feature: where cpuid reports it and how others name it."""
    name: str           # swaref's name (Linux's, except sse3 and lzcnt, named after the instructions)
    leaf: int           # cpuid leaf, subleaf, register, bit
    subleaf: int
    reg: int
    bit: int
    state: str          # registers the OS must save: "" (none beyond SSE), "avx" (ymm), "avx512" (zmm, k)
    macro: str          # what GCC and Clang define when the code may use it ("" if none)
    cpuinfo: str        # the flag in Linux's /proc/cpuinfo


def _f(name, leaf, subleaf, reg, bit, state, macro, cpuinfo=None):
    return Feature(name, leaf, subleaf, reg, bit, state, macro, cpuinfo or name)


X86_FEATURES = (
    _f("sse3", 1, 0, ECX, 0, "", "__SSE3__", "pni"),
    _f("ssse3", 1, 0, ECX, 9, "", "__SSSE3__"),
    _f("fma", 1, 0, ECX, 12, "avx", "__FMA__"),
    _f("cx16", 1, 0, ECX, 13, "", "__GCC_HAVE_SYNC_COMPARE_AND_SWAP_16"),
    _f("sse4_1", 1, 0, ECX, 19, "", "__SSE4_1__"),
    _f("sse4_2", 1, 0, ECX, 20, "", "__SSE4_2__"),
    _f("movbe", 1, 0, ECX, 22, "", "__MOVBE__"),
    _f("popcnt", 1, 0, ECX, 23, "", "__POPCNT__"),
    _f("avx", 1, 0, ECX, 28, "avx", "__AVX__"),
    _f("f16c", 1, 0, ECX, 29, "avx", "__F16C__"),
    _f("bmi1", 7, 0, EBX, 3, "", "__BMI__"),
    _f("avx2", 7, 0, EBX, 5, "avx", "__AVX2__"),
    _f("bmi2", 7, 0, EBX, 8, "", "__BMI2__"),
    _f("avx512f", 7, 0, EBX, 16, "avx512", "__AVX512F__"),
    _f("avx512dq", 7, 0, EBX, 17, "avx512", "__AVX512DQ__"),
    _f("avx512ifma", 7, 0, EBX, 21, "avx512", "__AVX512IFMA__"),
    _f("avx512cd", 7, 0, EBX, 28, "avx512", "__AVX512CD__"),
    _f("avx512bw", 7, 0, EBX, 30, "avx512", "__AVX512BW__"),
    _f("avx512vl", 7, 0, EBX, 31, "avx512", "__AVX512VL__"),
    _f("avx512vbmi", 7, 0, ECX, 1, "avx512", "__AVX512VBMI__"),
    _f("avx512_vbmi2", 7, 0, ECX, 6, "avx512", "__AVX512VBMI2__"),
    _f("gfni", 7, 0, ECX, 8, "", "__GFNI__"),
    _f("vaes", 7, 0, ECX, 9, "avx", "__VAES__"),
    _f("vpclmulqdq", 7, 0, ECX, 10, "avx", "__VPCLMULQDQ__"),
    _f("avx512_vnni", 7, 0, ECX, 11, "avx512", "__AVX512VNNI__"),
    _f("avx512_bitalg", 7, 0, ECX, 12, "avx512", "__AVX512BITALG__"),
    _f("avx512_vpopcntdq", 7, 0, ECX, 14, "avx512", "__AVX512VPOPCNTDQ__"),
    _f("avx512_fp16", 7, 0, EDX, 23, "avx512", "__AVX512FP16__"),
    _f("avx_vnni", 7, 1, EAX, 4, "avx", "__AVXVNNI__"),
    _f("avx512_bf16", 7, 1, EAX, 5, "avx512", "__AVX512BF16__"),
    _f("lahf_lm", 0x80000001, 0, ECX, 0, "", ""),
    _f("lzcnt", 0x80000001, 0, ECX, 5, "", "__LZCNT__", "abm"),
)

#: The x86-64 psABI levels (x86-64-v2 .. v4), as feature names.
X86_64_V2 = ("sse3", "ssse3", "sse4_1", "sse4_2", "popcnt", "cx16", "lahf_lm")
X86_64_V3 = X86_64_V2 + ("avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "lzcnt", "movbe")
X86_64_V4 = X86_64_V3 + ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")


@dataclass(frozen=True)
class Target:
    """A way to compile the kernel: its flags, and the CPU features the result needs."""
    name: str                 # the module file is swaref/_targets/<name>.<ext>
    machine: str              # "x86_64", or "" for every machine
    rank: int                 # the best runnable target (highest rank) is chosen
    flags: tuple              # compiler flags
    fallback: tuple           # the same for compilers without -march=x86-64-vN (GCC < 11)
    requires: tuple           # features (X86_FEATURES names); native: recorded at build time
    summary: str


_V2_FLAGS = ("-msse3", "-mssse3", "-msse4.1", "-msse4.2", "-mpopcnt", "-mcx16", "-msahf")
_V3_FLAGS = _V2_FLAGS + ("-mavx", "-mavx2", "-mfma", "-mbmi", "-mbmi2", "-mf16c", "-mlzcnt", "-mmovbe")
_V4_FLAGS = _V3_FLAGS + ("-mavx512f", "-mavx512bw", "-mavx512cd", "-mavx512dq", "-mavx512vl")
# GCC tunes AVX-512 code to 256-bit vectors by default; the kernel's tile loops are long and
# regular enough that full-width vectors pay (docs/performance.md).
_WIDE = ("-mprefer-vector-width=512",)

TARGETS = {t.name: t for t in (
    Target("v2", "x86_64", 2, ("-march=x86-64-v2",), _V2_FLAGS, X86_64_V2, "x86-64-v2: SSE4.2, POPCNT"),
    Target("v3", "x86_64", 3, ("-march=x86-64-v3",), _V3_FLAGS, X86_64_V3, "x86-64-v3: AVX2, FMA, BMI2"),
    Target("v4", "x86_64", 4, ("-march=x86-64-v4",) + _WIDE, _V4_FLAGS + _WIDE, X86_64_V4,
           "x86-64-v4: AVX-512 F/BW/CD/DQ/VL, 512-bit vectors"),
    Target("base", "", 1, (), (), (), "the compiler's default for this machine"),
    Target("native", "", 100, ("-march=native",), (), (), "-march=native of the machine that built it"),
)}


def machine():
    """This Python's machine, as setup.py and the targets name it ("x86_64", "aarch64", ...)."""
    m = platform.machine().lower()
    return {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}.get(m, m)


def default_targets(mach=None):
    """What setup.py builds without SWAREF_TARGETS: the x86-64 levels, or the machine's baseline."""
    return ("v2", "v3", "v4") if (mach or machine()) == "x86_64" else ("base",)


def known_targets(mach=None):
    """The target names SWAREF_TARGETS and SWAREF_TARGET accept on this machine."""
    return default_targets(mach) + ("native",)


# ---------------------------------------------------------------------------------------------
# The CPU

def x86_features(cpuid, xgetbv, darwin=False):
    """The features of X86_FEATURES that this CPU implements *and* whose registers the OS saves.

    cpuid(leaf, subleaf) -> (eax, ebx, ecx, edx); xgetbv(0) -> XCR0 (called only when the OS
    reports it, CPUID.1:ECX.OSXSAVE).  Returns (frozenset of names, XCR0 or None).
    """
    max_basic = cpuid(0, 0)[EAX]
    max_ext = cpuid(0x80000000, 0)[EAX]
    max_sub7 = cpuid(7, 0)[EAX] if max_basic >= 7 else -1
    osxsave = max_basic >= 1 and bool(cpuid(1, 0)[ECX] >> 27 & 1)
    xcr0 = xgetbv(0) if osxsave else None
    saved = {"": True,
             "avx": xcr0 is not None and xcr0 & 0x6 == 0x6,             # xmm and ymm state
             "avx512": xcr0 is not None and xcr0 & 0xE6 == 0xE6}        # + opmask, zmm0-15 high, zmm16-31
    if darwin:
        # macOS gives a thread the AVX-512 state on its first AVX-512 instruction, so XCR0 does not
        # show it beforehand (NumPy makes the same exception).
        saved["avx512"] = saved["avx"]
    regs = {}

    def has(f):
        valid = (f.leaf <= max_ext if f.leaf >= 0x80000000 else
                 f.leaf <= max_basic and (f.leaf != 7 or f.subleaf <= max_sub7))
        if not valid:
            return False
        if (f.leaf, f.subleaf) not in regs:
            regs[f.leaf, f.subleaf] = cpuid(f.leaf, f.subleaf)
        return bool(regs[f.leaf, f.subleaf][f.reg] >> f.bit & 1) and saved[f.state]

    return frozenset(f.name for f in X86_FEATURES if has(f)), xcr0


_CPU = None


def cpu():
    """This CPU, once per process: {"machine", "name", "features" (frozenset), "xcr0"}."""
    global _CPU
    if _CPU is None:
        info = {"machine": machine(), "name": platform.processor() or "unknown CPU",
                "features": frozenset(), "xcr0": None}
        if info["machine"] == "x86_64":
            from . import _cpuid            # built with the targets, without -march: runs anywhere
            info["features"], info["xcr0"] = x86_features(_cpuid.cpuid, _cpuid.xgetbv,
                                                          darwin=sys.platform == "darwin")
            info["name"] = _brand(_cpuid.cpuid) or info["name"]
        _CPU = info
    return _CPU


def _brand(cpuid):
    """The CPU's brand string (cpuid leaves 0x80000002-4), or "" where it has none."""
    if cpuid(0x80000000, 0)[EAX] < 0x80000004:
        return ""
    raw = b"".join(r.to_bytes(4, "little") for leaf in (0x80000002, 0x80000003, 0x80000004)
                   for r in cpuid(leaf, 0))
    return raw.split(b"\0", 1)[0].decode("ascii", "replace").strip()


# ---------------------------------------------------------------------------------------------
# The targets built

TARGET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_targets")


def built(where=TARGET_DIR):
    """{target name: path of its module} for the targets compiled into swaref/_targets/."""
    found = {}
    for name in known_targets():
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(where, f"{name}{suffix}")
            if os.path.exists(path):
                found[name] = path
                break
    return found


def record(path):
    """What setup.py recorded beside a target's module (its flags; for native, the features it
    needs), or {} when there is no readable record."""
    try:
        with open(os.path.join(os.path.dirname(path), os.path.basename(path).split(".")[0] + ".json")) as f:
            rec = json.load(f)
        return rec if isinstance(rec, dict) else {}
    except (OSError, ValueError):
        return {}


def requirements(name, path):
    """The features target `name` (its module at `path`) needs, or None when they are unknown
    (a native build without its record: nothing says what -march=native meant there)."""
    if name != "native":
        return frozenset(TARGETS[name].requires)
    req = record(path).get("requires")
    return frozenset(req) if isinstance(req, list) else None


def missing(name, path, features):
    """The features target `name` needs that `features` lacks (sorted), or None if unknown."""
    req = requirements(name, path)
    return None if req is None else sorted(req - features)


def runnable(targets, features):
    """The names of `targets` ({name: path}) a CPU with `features` runs, best first."""
    ok = [n for n, p in targets.items() if missing(n, p, features) == []]
    return sorted(ok, key=lambda n: -TARGETS[n].rank)


def choose(targets, features, forced=""):
    """The target to load: `forced` (SWAREF_TARGET) if set, else the best of `targets` ({name:
    path}) that a CPU with `features` runs.  Raises SwarefError("backend") when none can be."""
    from .errors import SwarefError
    names = ", ".join(targets) or "none"
    can = runnable(targets, features)
    forced = forced.strip()
    if forced in ("", "auto"):
        if not can:
            raise SwarefError("backend", f"none of the compiled kernel targets ({names}) runs on this CPU: "
                                         + "; ".join(_why_not(n, p, features) for n, p in targets.items()))
        return can[0]
    if forced not in known_targets():
        raise SwarefError("backend", f"{ENV_FORCE} must be one of auto, {', '.join(known_targets())} on "
                                     f"{machine()}; got {forced!r}")
    if forced not in targets:
        raise SwarefError("backend", f"{ENV_FORCE}={forced}: that kernel target is not built here (built: {names}); "
                                     f"build it: SWAREF_TARGETS={','.join([*targets, forced])} python setup.py build_ext --inplace")
    if forced not in can:
        raise SwarefError("backend", f"{ENV_FORCE}={forced}: this CPU cannot run that kernel target "
                                     f"({_why_not(forced, targets[forced], features)}); it runs: "
                                     f"{', '.join(can) or 'none'}")
    return forced


def _why_not(name, path, features):
    lack = missing(name, path, features)
    if lack is None:
        return f"{name}: its record {os.path.basename(path).split('.')[0]}.json, which says what it needs, is missing"
    return f"{name} needs {', '.join(lack)}" if lack else f"{name} runs"


# ---------------------------------------------------------------------------------------------
# Loading

_LOADED = {}        # target name -> its module (a module file can only be initialised once)


def load(name, path):
    """Target `name`'s module (at `path`), under the module name every target has, swaref._core."""
    if name not in _LOADED:
        spec = importlib.util.spec_from_file_location("swaref._core", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _LOADED[name] = module
    return _LOADED[name]


def kernel():
    """The module swaref._core stands for: the chosen target's (swaref/_core.py calls this once)."""
    targets = built()
    if not targets:
        raise ImportError(f"no compiled kernel target in {TARGET_DIR}", name="swaref._core")
    name = choose(targets, cpu()["features"], os.environ.get(ENV_FORCE, ""))
    return load(name, targets[name])


def target_of(module):
    """The target whose module this is, or None (a module that no target built: a stale
    single-target swaref/_core.<ext> from before targets, which would shadow swaref/_core.py)."""
    return next((n for n, m in _LOADED.items() if m is module), None)


# ---------------------------------------------------------------------------------------------
# Reporting: `swaref info`, `swaref --version`, benchmark headers

def describe():
    """Everything `swaref info` prints, as a dict (never raises: a failure is reported in "error")."""
    d = {"machine": machine(), "cpu": None, "features": [], "xcr0": None, "built": {}, "runnable": [],
         "target": None, "forced": os.environ.get(ENV_FORCE, ""), "module": None, "flags": None,
         "uses": [], "openmp": None, "threads": None, "build": None, "blas": blas(), "linear": linear_path(),
         "error": None,
         "gomp_spincount": os.environ.get("GOMP_SPINCOUNT")}
    try:
        c = cpu()
        d.update(cpu=c["name"], features=sorted(c["features"]), xcr0=c["xcr0"])
        targets = built()
        d["built"] = {n: " ".join(record(p).get("flags") or TARGETS[n].flags) for n, p in targets.items()}
        d["runnable"] = runnable(targets, c["features"])
        from . import _core                   # swaref/_core.py: chooses and loads
        name = target_of(_core)
        if name is None:
            raise ImportError(f"{_core.__file__} is not one of swaref's kernel targets: a build from before "
                              f"targets; delete it, or rebuild (python setup.py build_ext --inplace deletes it)")
        d.update(target=name, module=_core.__file__, flags=d["built"][name],
                 uses=[f.name for f in X86_FEATURES if f.name in (requirements(name, targets[name]) or ())],
                 openmp=bool(_core.openmp_enabled()), threads=int(_core.default_threads()),
                 build=record(targets[name]).get("build", "unrecorded"))
    except Exception as exc:                  # a report, not a check: say what went wrong
        d["error"] = f"{type(exc).__name__}: {exc}"
    return d


def linear_path():
    """The projections' kernels (swaref._linear): its ISA, and what multiplies more than SMALL_T tokens
    (as the module says); None when the module is not built."""
    try:
        from . import _linear
    except ImportError:
        return None
    return {"isa": _linear.isa(), "gemm": _linear.many_token_path()}


def blas():
    """NumPy's BLAS, as NumPy reports it ("name version"), or "unknown"; for OpenBLAS also the
    kernel family it runs, OPENBLAS_CORETYPE when set, and how long its idle workers spin
    (e.g. "scipy-openblas 0.3.31, core Haswell (OPENBLAS_CORETYPE=Haswell), idle workers sleep
    after 2^16 ticks (OPENBLAS_THREAD_TIMEOUT=16)").  Each part is asked of the loaded library."""
    try:
        import numpy as np
        b = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        out = f"{b.get('name', '?')} {b.get('version', '')}".strip()
    except Exception:                         # older NumPy: no dict form
        out = "unknown"
    core = openblas_core()
    if core:
        forced = os.environ.get("OPENBLAS_CORETYPE")
        out += f", core {core}" + (f" (OPENBLAS_CORETYPE={forced})" if forced else "")
    timeout = openblas_thread_timeout()
    if timeout is not None:
        out += f", idle workers sleep after 2^{timeout} ticks" + (
            " (OpenBLAS's default)"
            if timeout == OPENBLAS_DEFAULT_TIMEOUT else f" (OPENBLAS_THREAD_TIMEOUT={timeout})")
    return out


#: OpenBLAS's THREAD_TIMEOUT when OPENBLAS_THREAD_TIMEOUT is unset (driver/others/blas_server.c):
#: an idle worker spins 2**28 time-stamp ticks before it sleeps.
OPENBLAS_DEFAULT_TIMEOUT = 28


def _openblas_call(names, restype):
    """The first of names that the OpenBLAS this process has loaded (NumPy's) exports, called with no
    arguments, or None (another BLAS, none loaded yet, or no such function)."""
    try:
        import ctypes
        with open("/proc/self/maps") as f:             # the shared objects mapped: path last
            paths = sorted({ln.split()[-1] for ln in f if "openblas" in ln.rsplit("/", 1)[-1] and ".so" in ln})
        for path in paths:
            lib = ctypes.CDLL(path)
            for name in names:
                fn = getattr(lib, name, None)
                if fn is not None:
                    fn.restype = restype
                    return fn()
    except Exception:                         # a report, never a failure
        pass
    return None


def openblas_core():
    """The kernel family ("SkylakeX", "Haswell", "Zen", ...) of the OpenBLAS this process has loaded
    (NumPy's), or None: another BLAS, or none loaded yet.  OpenBLAS picks it from the CPU unless
    OPENBLAS_CORETYPE names one; the sgemm behind a prefill's projections runs those kernels
    (on a Zen 5 core, AVX-512 SkylakeX at ~180 GFLOP/s against Haswell's AVX2 at ~110)."""
    import ctypes
    name = _openblas_call(("scipy_openblas_get_corename64_", "scipy_openblas_get_corename",
                           "openblas_get_corename"), ctypes.c_char_p)
    return None if name is None else name.decode()


def openblas_thread_timeout():
    """N, where the loaded OpenBLAS's idle worker threads spin 2**N time-stamp ticks before they
    sleep: OPENBLAS_THREAD_TIMEOUT as OpenBLAS read it when it loaded, clamped to 4 .. 30 as
    blas_server.c clamps it, or 28 when it was unset (or 0); None where that cannot be asked (another
    BLAS, or an OpenBLAS without ``openblas_thread_timeout``).  swaref sets the variable when it is
    imported before NumPy (swaref/__init__.py): after a prefill, a worker spinning at the default
    holds a core that the decode steps' OpenMP threads need."""
    import ctypes
    n = _openblas_call(("openblas_thread_timeout",), ctypes.c_int)
    if n is None:
        return None
    return OPENBLAS_DEFAULT_TIMEOUT if n <= 0 else min(max(n, 4), 30)


def summary(d=None):
    """One line: the kernel target and why (for `swaref --version` and benchmark headers)."""
    d = describe() if d is None else d
    if d["target"] is None:
        return f"kernel: not loaded ({d['error']})"
    how = f"forced by {ENV_FORCE}" if d["forced"] not in ("", "auto") else "the best this CPU runs"
    return (f"kernel target {d['target']} ({TARGETS[d['target']].summary}; {how}; built: {' '.join(d['built'])}), "
            f"OpenMP {'on' if d['openmp'] else 'off'}{'' if d['build'] == 'release' else ', ' + d['build'] + ' build'}")


def report(d):
    """`swaref info`'s lines."""
    from . import GOMP_SPINCOUNT_DEFAULT, SPEC_VERSION, __version__
    lines = [f"swaref {__version__} (spec {SPEC_VERSION}), Python {platform.python_version()}",
             summary(d)]
    if d["target"] is not None:
        lines += [f"  module:  {d['module']}",
                  f"  flags:   {d['flags']}",
                  f"  needs:   {' '.join(d['uses']) or '(nothing beyond the machine baseline)'}",
                  f"  threads: {d['threads']} by default (OMP_NUM_THREADS or the OpenMP default); "
                  f"GOMP_SPINCOUNT={d.get('gomp_spincount')} (swaref's default "
                  f"{GOMP_SPINCOUNT_DEFAULT} unless set before import)"]
    lines += [f"targets built: {' '.join(d['built']) or 'none'}; this CPU runs: {' '.join(d['runnable']) or 'none'}",
              f"CPU: {d['cpu']} ({d['machine']})",
              f"  features: {' '.join(d['features']) or '(none detected)'}"]
    if d["xcr0"] is not None:
        lines.append(f"  OS saves: ymm {'yes' if d['xcr0'] & 0x6 == 0x6 else 'NO'}, "
                     f"zmm {'yes' if d['xcr0'] & 0xE6 == 0xE6 else 'no'} (XCR0 = {d['xcr0']:#x})")
    if d.get("linear"):
        lines.append(f"projections: swaref._linear, {d['linear']['isa']} kernels; more than 16 tokens: "
                     f"{d['linear']['gemm']}")
    lines.append(f"BLAS (NumPy): {d['blas']}")
    return lines


def add_arguments(parser):
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--runnable", action="store_true",
                        help="print only the targets this CPU runs, best first, one per line (for CI loops)")


def run(args):
    d = describe()
    if args.runnable:
        print("\n".join(d["runnable"]))
    elif args.json:
        print(json.dumps(d, indent=2))
    else:
        print("\n".join(report(d)))
    return 0 if d["error"] is None else 1
