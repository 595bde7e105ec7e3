# swaref/_kernels.pxi: the Cython declarations of swaref/_kernels.h (what swaref/_core.pyx and its
# test hooks, swaref/_hooks.pxi, call), included at the top of _core.pyx.  Each name is defined,
# and documented, in the header.

cdef extern from "_kernels.h":
    enum:
        TILE "SWAREF_TILE"            # keys per tile: aligned position ranges [m*TILE, (m+1)*TILE)
        MAX_SROWS "SWAREF_MAX_SROWS"  # rows of one score pass, at most
    const int64_t POS_INF "SWAREF_POS_INF"   # the position of an unbounded right side
    const int SWAREF_HAVE_OPENMP
    const int SWAREF_SPAN_F, SWAREF_SPAN_D, SWAREF_PVSPAN_F, SWAREF_PVSPAN_D, SWAREF_SROWS_F, SWAREF_SROWS_D
    int swaref_max_threads() noexcept nogil
    void swaref_prefetch(const void* p, Py_ssize_t nbytes) noexcept nogil
    uint64_t swaref_range_bits(int ja, int jb) noexcept nogil
    void swaref_exp_array_f(const float* x, float* y, Py_ssize_t n, int vector) noexcept nogil
    void swaref_exp_array_d(const double* x, double* y, Py_ssize_t n, int vector) noexcept nogil
    void swaref_scores_rows_f(int n, const float* const* q, const float* kt, Py_ssize_t D, float scale,
                              float* const* s) noexcept nogil
    void swaref_scores_rows_d(int n, const double* const* q, const double* kt, Py_ssize_t D, double scale,
                              double* const* s) noexcept nogil
    float swaref_softmax_f(float* s, uint64_t present, int ja, int jb, float* m, float* l) noexcept nogil
    double swaref_softmax_d(double* s, uint64_t present, int ja, int jb, double* m, double* l) noexcept nogil
    void swaref_value_rows_f(float* o, const float* al, const float* sc, const float** vp, const char* vis,
                             const Py_ssize_t* ja, const Py_ssize_t* jb, Py_ssize_t r0, Py_ssize_t r1,
                             Py_ssize_t D, Py_ssize_t span) noexcept nogil
    void swaref_value_rows_d(double* o, const double* al, const double* sc, const double** vp, const char* vis,
                             const Py_ssize_t* ja, const Py_ssize_t* jb, Py_ssize_t r0, Py_ssize_t r1,
                             Py_ssize_t D, Py_ssize_t span) noexcept nogil
    void swaref_transpose_tile_f(float* kt, const float* const* rows, Py_ssize_t off, Py_ssize_t D) noexcept nogil
    void swaref_transpose_tile_d(double* kt, const double* const* rows, Py_ssize_t off, Py_ssize_t D) noexcept nogil
    bint swaref_all_finite_f(const float* x, Py_ssize_t n) noexcept nogil
    bint swaref_all_finite_d(const double* x, Py_ssize_t n) noexcept nogil
    ctypedef struct swaref_exact_t:
        pass
    void swaref_exact_init(swaref_exact_t* X, double scale, double cap, const double* sink) noexcept nogil
    void swaref_exact_key_f(swaref_exact_t* X, int stage, const float* q, const float* k, const float* v,
                            Py_ssize_t D, double* acc) noexcept nogil
    void swaref_exact_key_d(swaref_exact_t* X, int stage, const double* q, const double* k, const double* v,
                            Py_ssize_t D, double* acc) noexcept nogil
    void swaref_softcap_f(float* s, Py_ssize_t n, float cap) noexcept nogil
    void swaref_softcap_d(double* s, Py_ssize_t n, double cap) noexcept nogil
    void swaref_softcap_array_f(const float* x, float* y, Py_ssize_t n, float cap) noexcept nogil
    void swaref_softcap_array_d(const double* x, double* y, Py_ssize_t n, double cap) noexcept nogil
