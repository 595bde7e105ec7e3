/* swaref._cpuid: the two instructions swaref/_cpu.py needs to choose a kernel target on x86.

   cpuid(leaf, subleaf) -> (eax, ebx, ecx, edx): what the CPU implements.
   xgetbv(index) -> int: XCR0 for index 0, the register state the operating system saves on a
   context switch.  A CPU may implement AVX-512 while the OS does not save the zmm registers
   (then an AVX-512 instruction faults), so _cpu.py requires both.

   Built without any -march flag (setup.py), so that it runs on every CPU of its architecture.
   On other architectures the module exists with SUPPORTED = False and no functions. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define SWAREF_X86 1
#include <cpuid.h>

static PyObject* swaref_cpuid(PyObject* self, PyObject* args) {
    unsigned int leaf, subleaf, a = 0, b = 0, c = 0, d = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "II", &leaf, &subleaf)) return NULL;
    /* __cpuid_count, not __get_cpuid_count: the latter refuses leaves above the maximum basic
       leaf, and _cpu.py checks the maximum of each range itself (leaf 0, leaf 0x80000000). */
    __cpuid_count(leaf, subleaf, a, b, c, d);
    return Py_BuildValue("(IIII)", a, b, c, d);
}

static PyObject* swaref_xgetbv(PyObject* self, PyObject* args) {
    unsigned int index, lo, hi;
    (void)self;
    if (!PyArg_ParseTuple(args, "I", &index)) return NULL;
    /* The raw opcode (0f 01 d0): assemblers older than the instruction accept it, and no -mxsave
       is needed.  Only valid when CPUID.1:ECX.OSXSAVE is set; _cpu.py checks that first. */
    __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(lo), "=d"(hi) : "c"(index));
    return PyLong_FromUnsignedLongLong(((unsigned long long)hi << 32) | lo);
}

static PyMethodDef swaref_cpuid_methods[] = {
    {"cpuid", swaref_cpuid, METH_VARARGS, "cpuid(leaf, subleaf) -> (eax, ebx, ecx, edx)"},
    {"xgetbv", swaref_xgetbv, METH_VARARGS, "xgetbv(index) -> the extended control register (index 0: XCR0)"},
    {NULL, NULL, 0, NULL}
};
#else
#define SWAREF_X86 0
static PyMethodDef swaref_cpuid_methods[] = {{NULL, NULL, 0, NULL}};
#endif

static struct PyModuleDef swaref_cpuid_module = {
    PyModuleDef_HEAD_INIT, "swaref._cpuid",
    "cpuid and xgetbv for swaref/_cpu.py (x86 only; SUPPORTED says whether they exist).",
    -1, swaref_cpuid_methods, NULL, NULL, NULL, NULL
};

PyMODINIT_FUNC PyInit__cpuid(void) {
    PyObject* m = PyModule_Create(&swaref_cpuid_module);
    if (m == NULL) return NULL;
    if (PyModule_AddIntConstant(m, "SUPPORTED", SWAREF_X86) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
