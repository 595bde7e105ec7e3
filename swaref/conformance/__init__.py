"""Golden test vectors for ports of swaref, and the runner that judges a port (docs/conformance.md).

A *suite* is a folder with ``manifest.json`` and one ``<case_id>.safetensors``
per case.  Modules, in the order a reader meets them:

* ``cases``: the case catalogue (``CaseSpec``, ``core_cases``, ``full_cases``), dtypes, tolerance constants;
* ``variants``: simulators of the correct algorithm and of known-wrong variants (spec 1.0 and 1.1);
* ``adversarial``: witnesses that make every applicable wrong variant show by a margin;
* ``generate``: golden results and the suite folder (``generate_suite``);
* ``ports``: ports built on swaref (``reference_port``, ``cython_port``), examples of the port interface;
* ``suite``: reading and verifying a suite (``load_suite``, ``SuiteError``);
* ``results``: a port's results from a folder or a Python function (``run_python``, ``write_result``);
* ``verdicts``: one result against its golden values (``judge``, ``Verdict``);
* ``runner``: the whole check (``check_suite``): selection, ``--exec`` subprocesses, summary, claim;
* ``files``, ``safetensors_io``, ``schema``: safe reading of untrusted files and the JSON schemas;
* ``cli``: ``swaref vectors generate|check``.

Python API for a port's own tests (docs/conformance.md, "Python API")::

    suite = load_suite("core-suite")                  # verifies everything; SuiteError if not
    for entry in suite.entries:
        case = suite.case(entry["id"])
        verdict = judge(entry, case, run_python(my_port, case))
        assert verdict.status == "PASS", verdict.line()
"""
from .cases import (DTYPES, FORMAT, FORMAT_VERSION, GeneratorError, CaseSpec, cases_of, core_cases, full_cases,
                    negative_cases)
from .generate import build_case, generate_suite
from .verdicts import Verdict, judge
from .ports import cython_port, reference_port, swaref_port
from .results import load_python_port, read_result, run_port_to_dir, run_python, write_result
from .runner import FEATURES, check_suite
from .safetensors_io import SafetensorsError
from .suite import Suite, SuiteError, load_suite
from .variants import WRONG_VARIANTS

__all__ = [
    "DTYPES", "FORMAT", "FORMAT_VERSION", "GeneratorError", "CaseSpec", "cases_of", "core_cases", "full_cases",
    "negative_cases", "build_case", "generate_suite", "Verdict", "judge", "cython_port", "reference_port",
    "swaref_port", "load_python_port", "read_result", "run_port_to_dir", "run_python", "write_result",
    "FEATURES", "check_suite", "SafetensorsError", "Suite", "SuiteError", "load_suite", "WRONG_VARIANTS",
]
