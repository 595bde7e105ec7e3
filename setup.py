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

compile_args = ["-O0", "-g"] if DEBUG else ["-O3", "-fno-math-errno"]
if not DEBUG and not PORTABLE:
    compile_args.append("-march=native")
    # GCC tunes AVX-512 CPUs to 256-bit vectors by default; the kernel's tile loops
    # are long and regular enough that full-width vectors pay (docs/performance.md).
    if _compiler_accepts(["-march=native", "-mprefer-vector-width=512"]):
        compile_args.append("-mprefer-vector-width=512")
link_args = []
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
    depends=["swaref/_kernels.h"],
    include_dirs=[np.get_include()],
    extra_compile_args=compile_args,
    extra_link_args=link_args,
    define_macros=macros,
)

setup(
    ext_modules=cythonize(
        [ext],
        compiler_directives=directives,
        force=DEBUG,
    ),
)
