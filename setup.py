"""Build script for swaref's compiled kernel: ``swaref._core``, once per CPU target.

Cython turns swaref/_core.pyx into one C file (module ``swaref._core``); that file is compiled
once per *target* (swaref/_cpu.py lists them and their flags) into
``swaref/_targets/<target>.<ext>`` (a folder, not a package), and swaref/_core.py loads the
best one the CPU runs at import (as NumPy does for its kernels: one wheel for every CPU).
Beside each module, a small ``<target>.json`` records its compiler flags (and, for ``native``, the CPU features it
needs).  The tiny ``swaref._cpuid`` (cpuid and xgetbv, no -march) tells swaref/_cpu.py what the
CPU has.  The targets compile in parallel (``build_ext -j``, default: every core).

Compiler directives are set once here.  Environment switches:

* ``SWAREF_TARGETS``: the targets to build, comma-separated: ``all`` (the default: ``v2,v3,v4``
  on x86-64, ``base`` elsewhere), or ``native`` alone, ``-march=native`` of this machine: one
  module, the fastest build for a developer (``SWAREF_TARGETS=native python setup.py
  build_ext --inplace``; the module then runs on this machine only, and swaref checks that).
* ``SWAREF_DEBUG=1``: bounds checks, wraparound checks and ``-O0 -g`` (run the
  whole test suite against this build to prove the kernel never reads out of
  bounds).
* ``SWAREF_PORTABLE=1``: refuse ``native`` (the default targets already run on every CPU of
  their machine; before targets, this switch was what dropped ``-march=native``).
* ``SWAREF_NO_OPENMP=1``: build without OpenMP (the kernel then runs
  sequentially; results are bitwise identical because each query row's
  arithmetic never depends on the thread that computes it).
* ``SWAREF_SANITIZE=1``: AddressSanitizer and UndefinedBehaviorSanitizer,
  ``-O1 -g -fno-omit-frame-pointer``, every report fatal
  (``-fno-sanitize-recover=all``).  Python itself is not instrumented, so the
  tests run with libasan preloaded::

      SWAREF_SANITIZE=1 python setup.py build_ext --inplace --force
      LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 \
          UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 python -m pytest -q tests/test_core.py

Switching between these builds needs ``--force`` (the flags are not part of
setuptools' staleness check).  An in-place build deletes the kernel modules it did not build
(other targets, and a single-target ``swaref/_core.<ext>`` from before targets, which would
shadow swaref/_core.py), so that swaref/ holds exactly one build.

Whether OpenMP is on is decided by the C preprocessor (``_OPENMP``) inside
swaref/_core.pyx, not by Cython's deprecated compile-time ``IF``.
"""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext as _build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
DEBUG = os.environ.get("SWAREF_DEBUG", "0") not in ("", "0")
PORTABLE = os.environ.get("SWAREF_PORTABLE", "0") not in ("", "0")
NO_OPENMP = os.environ.get("SWAREF_NO_OPENMP", "0") not in ("", "0")
SANITIZE = os.environ.get("SWAREF_SANITIZE", "0") not in ("", "0")


def _load_cpu():
    """swaref/_cpu.py on its own (swaref is not importable yet): the targets and their flags."""
    spec = importlib.util.spec_from_file_location("_swaref_cpu_setup", os.path.join(HERE, "swaref", "_cpu.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod            # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


CPU = _load_cpu()


def _cc():
    return (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()


def _compiler_accepts(flags, program="int main(void){return 0;}\n"):
    """True when the C compiler builds a tiny program with these flags."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "t.c")
        with open(src, "w") as f:
            f.write(program)
        try:
            r = subprocess.run(_cc() + flags + [src, "-o", os.path.join(tmp, "t")], capture_output=True)
        except OSError:
            return False
        return r.returncode == 0


def _macros(flags):
    """The macros the C compiler predefines with these flags (which features -march=native means)."""
    r = subprocess.run(_cc() + flags + ["-dM", "-E", "-x", "c", os.devnull], capture_output=True, text=True)
    return set(re.findall(r"^#define (\w+)", r.stdout, re.M)) if r.returncode == 0 else set()


def _targets():
    """The targets to build (SWAREF_TARGETS), each with its flags: [(name, flags, requires)]."""
    names = [n.strip() for n in os.environ.get("SWAREF_TARGETS", "all").split(",") if n.strip()] or ["all"]
    if names == ["all"]:
        names = list(CPU.default_targets())
    bad = [n for n in names if n not in CPU.known_targets()]
    if bad:
        sys.exit(f"SWAREF_TARGETS: unknown target(s) {', '.join(bad)} on {CPU.machine()}; "
                 f"known: all, {', '.join(CPU.known_targets())}")
    if PORTABLE and "native" in names:
        sys.exit("SWAREF_PORTABLE=1 and SWAREF_TARGETS=native contradict each other")
    out = []
    for name in names:
        t = CPU.TARGETS[name]
        if name == "native":
            flags = list(t.flags) + ([f for f in CPU._WIDE if _compiler_accepts(["-march=native", f])])
            defined = _macros(["-march=native"])
            requires = sorted(f.name for f in CPU.X86_FEATURES if f.macro and f.macro in defined)
        else:
            flags = list(t.flags) if _compiler_accepts(list(t.flags)) else list(t.fallback)
            if t.flags and not _compiler_accepts(flags):
                sys.exit(f"the C compiler accepts neither {' '.join(t.flags)} nor {' '.join(t.fallback)}: "
                         f"it cannot build target {name}; set SWAREF_TARGETS to the others")
            requires = list(t.requires)
        out.append((name, flags, requires))
    # Longest compile first: with fewer cores than targets, v4 should not start last.
    return sorted(out, key=lambda t: -CPU.TARGETS[t[0]].rank)


use_openmp = (not NO_OPENMP) and sys.platform != "win32" and _compiler_accepts(
    ["-fopenmp"], "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n")

SANITIZERS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
if DEBUG:
    compile_args = ["-O0", "-g"]
elif SANITIZE:
    compile_args = ["-O1", "-g", "-fno-omit-frame-pointer", "-fno-math-errno"]
else:
    compile_args = ["-O3", "-fno-math-errno"]
if SANITIZE:
    compile_args += SANITIZERS
if _compiler_accepts(["-Wno-psabi"]):
    # GCC notes that 64-byte vector arguments pass differently without AVX-512: only static
    # inline functions of swaref/_kernels.h take them, so no ABI is crossed.
    compile_args.append("-Wno-psabi")
link_args = SANITIZERS[:1] if SANITIZE else []
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
if use_openmp:
    compile_args.append("-fopenmp")
    link_args.append("-fopenmp")

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
    "nonecheck": DEBUG,
    "embedsignature": True,
}

KERNEL_DEPENDS = ["swaref/_kernels.h", "swaref/_kernels.pxi", "swaref/_tile.pxi", "swaref/_fallback.pxi",
                  "swaref/_hooks.pxi"]
# Cython runs once, for the module swaref._core; the targets compile its C file.
(core,) = cythonize(
    [Extension("swaref._core", ["swaref/_core.pyx"], depends=KERNEL_DEPENDS, include_dirs=[np.get_include()])],
    compiler_directives=directives,
    # --force must regenerate the C too: cythonize otherwise keeps a _core.c generated with
    # another build's directives (a debug build's checked division inside a release build).
    force=DEBUG or SANITIZE or "--force" in sys.argv or "-f" in sys.argv,
)
(CORE_C,) = core.sources

# Each target compiles its own two-line C file that includes swaref/_core.c: its own source
# name gives it its own object file, so the targets can compile in parallel.
WRAPPERS = os.path.join("build", "swaref-targets")
os.makedirs(WRAPPERS, exist_ok=True)
TARGETS = _targets()
extensions = []
for name, flags, requires in TARGETS:
    wrapper = os.path.join(WRAPPERS, f"{name}.c")
    text = f"/* Generated by setup.py: {CORE_C} for target {name} ({' '.join(flags)}). */\n#include \"_core.c\"\n"
    if not os.path.exists(wrapper) or open(wrapper).read() != text:
        with open(wrapper, "w") as f:
            f.write(text)
    ext = Extension(f"swaref._targets.{name}", [wrapper], depends=[CORE_C] + KERNEL_DEPENDS,
                    include_dirs=[os.path.dirname(CORE_C), np.get_include()],
                    extra_compile_args=compile_args + flags, extra_link_args=link_args, define_macros=macros)
    ext.swaref_record = {"target": name, "flags": flags, "requires": requires,
                         "build": "debug" if DEBUG else "sanitize" if SANITIZE else "release",
                         "compile_args": compile_args + flags, "openmp": use_openmp}
    extensions.append(ext)
extensions.append(Extension("swaref._cpuid", ["swaref/_cpuid.c"], extra_compile_args=["-O2"]))
# Its fused decode-layer glue computes RoPE as NumPy does, a product, a product and a sum, each
# rounded: no FMA may join them (GCC contracts across statements by default where FMA exists).
LINEAR_ARGS = ["-ffp-contract=off"] if _compiler_accepts(["-ffp-contract=off"]) else []
# swaref._linear (a model's linear layers): one module for the x86-64 baseline, whatever the targets;
# it picks its AVX2 / AVX-512 function versions at run time (swaref/_linear.h).
(linear_ext,) = cythonize(
    [Extension("swaref._linear", ["swaref/_linear.pyx"], depends=["swaref/_linear.h"],
               include_dirs=[np.get_include()], extra_compile_args=compile_args + LINEAR_ARGS,
               extra_link_args=link_args, define_macros=macros)],
    compiler_directives=directives,
    force=DEBUG or SANITIZE or "--force" in sys.argv or "-f" in sys.argv,
)
extensions.append(linear_ext)


class build_ext(_build_ext):
    """setuptools' build_ext, plus: every core by default, a record beside each target's module,
    and in-place builds that leave exactly the kernel modules they built."""

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1

    def run(self):
        # build/lib is what a wheel is made of, and outlives the build that filled it (pip builds in
        # the tree): a kernel module some earlier build left there would ship in the wheel.
        self._remove_other_kernels(os.path.join(self.build_lib, "swaref"))
        if self.inplace:
            self._remove_other_kernels(os.path.join(HERE, "swaref"))
            os.makedirs(os.path.join(HERE, "swaref", "_targets"), exist_ok=True)   # setuptools copies into it
        super().run()
        if self.inplace:        # setuptools built into build/lib and copied the modules: the records too
            for ext in self.extensions:
                if hasattr(ext, "swaref_written"):
                    shutil.copyfile(ext.swaref_written, os.path.join(
                        os.path.dirname(self.get_ext_fullpath(ext.name)), os.path.basename(ext.swaref_written)))

    def _remove_other_kernels(self, pkg):
        """Delete from `pkg` the kernel modules (and records) this build does not make."""
        keep = {os.path.join("_targets", e.swaref_record["target"]) for e in self.extensions
                if hasattr(e, "swaref_record")}
        suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
        for stem in ["_core"] + [os.path.join("_targets", n) for n in CPU.TARGETS]:
            path = os.path.join(pkg, stem + suffix)
            if os.path.exists(path) and stem not in keep:
                print(f"removing {os.path.relpath(path, HERE)}: not part of this build")
                os.remove(path)
                rec = path[: -len(suffix)] + ".json"
                if os.path.exists(rec):
                    os.remove(rec)

    def build_extension(self, ext):
        super().build_extension(ext)
        rec = getattr(ext, "swaref_record", None)
        if rec is not None:
            ext.swaref_written = os.path.join(os.path.dirname(self.get_ext_fullpath(ext.name)),
                                              f"{rec['target']}.json")
            with open(ext.swaref_written, "w") as f:
                json.dump(rec, f, indent=1)
                f.write("\n")


setup(ext_modules=extensions, cmdclass={"build_ext": build_ext})
