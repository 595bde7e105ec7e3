"""Build script for swaref's compiled kernel, ``swaref._core``.

Compiler directives are set once here.  Environment switches:

* ``SWAREF_DEBUG=1``: bounds checks, wraparound checks and ``-O0 -g`` (run the
  whole test suite against this build to prove the kernel never reads out of
  bounds).
* ``SWAREF_PORTABLE=1``: no ``-march=native`` (for a wheel that must run on
  other CPUs than the one that built it).
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
setuptools' staleness check).

Whether OpenMP is on is decided by the C preprocessor (``_OPENMP``) inside
swaref/_core.pyx, not by Cython's deprecated compile-time ``IF``.
"""
import os
import sys
import tempfile
import subprocess
import sysconfig

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("SWAREF_DEBUG", "0") not in ("", "0")
PORTABLE = os.environ.get("SWAREF_PORTABLE", "0") not in ("", "0")
NO_OPENMP = os.environ.get("SWAREF_NO_OPENMP", "0") not in ("", "0")
SANITIZE = os.environ.get("SWAREF_SANITIZE", "0") not in ("", "0")


def _compiler_accepts(flags, program="int main(void){return 0;}\n"):
    """True when the C compiler builds a tiny program with these flags."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    cc = cc.split()
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "t.c")
        with open(src, "w") as f:
            f.write(program)
        try:
            r = subprocess.run(cc + flags + [src, "-o", os.path.join(tmp, "t")],
                               capture_output=True)
        except OSError:
            return False
        return r.returncode == 0


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
if not DEBUG and not PORTABLE:
    compile_args.append("-march=native")
    # GCC tunes AVX-512 CPUs to 256-bit vectors by default; the kernel's tile loops
    # are long and regular enough that full-width vectors pay (docs/performance.md).
    if _compiler_accepts(["-march=native", "-mprefer-vector-width=512"]):
        compile_args.append("-mprefer-vector-width=512")
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

ext = Extension(
    "swaref._core",
    ["swaref/_core.pyx"],
    depends=["swaref/_kernels.h", "swaref/_kernels.pxi", "swaref/_hooks.pxi"],
    include_dirs=[np.get_include()],
    extra_compile_args=compile_args,
    extra_link_args=link_args,
    define_macros=macros,
)

# swaref._linear (a model's linear layers): compiled for the x86-64 baseline whatever the flags above;
# it picks its AVX2 / AVX-512 function versions at run time (swaref/_linear.h).
linear_ext = Extension(
    "swaref._linear",
    ["swaref/_linear.pyx"],
    depends=["swaref/_linear.h"],
    include_dirs=[np.get_include()],
    extra_compile_args=[a for a in compile_args if not a.startswith(("-march", "-mprefer"))],
    extra_link_args=link_args,
    define_macros=macros,
)

setup(
    ext_modules=cythonize(
        [ext, linear_ext],
        compiler_directives=directives,
        # --force must regenerate the C too: cythonize otherwise keeps a _core.c generated with
        # another build's directives (a debug build's checked division inside a release build).
        force=DEBUG or SANITIZE or "--force" in sys.argv or "-f" in sys.argv,
    ),
)
