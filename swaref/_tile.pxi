# swaref/_core.pyx, included: one key tile of a work item (gather, visible lanes, scores,
# softmax step, values).  Text of _core.pyx split out for size; it sees the module's
# declarations (Keys, Rows, Cursor, floating) and follows its docstring's order of operations.

# ----------------------------------------------------------------- one tile

cdef inline void _put_key(int64_t j, const void* krow, const void* vrow, const void** kbase, const void** vbase,
                          char* present, uint64_t* pbits) noexcept nogil:
    """Put one key into lane j: the starts of its key and value rows (all KV heads) are noted."""
    present[j] = 1
    pbits[0] |= (<uint64_t>1) << j
    kbase[j] = krow
    vbase[j] = vrow


cdef void _cursor(const Keys* K, Cursor* c, int64_t a, int64_t b) noexcept nogil:
    """Start a pass over the positions a .. b (b < POS_INF + 1): each source's first and last
    candidate, so that no source is walked outside a .. b (the gap between the sink slots and a
    window is never crawled)."""
    c.sp = a
    c.send = K.ns - 1 if K.ns - 1 < b else b
    c.rp = a if a > K.ring_lo else K.ring_lo
    c.rend = K.ring_hi if K.ring_hi < b else b
    c.e = _lower_bound(K.k_pos, K.S, a)
    c.eb = _lower_bound(K.k_pos, K.S, b + 1)


cdef int64_t _gather_tile(const Keys* K, Cursor* c, Py_ssize_t esize, const void** kbase, const void** vbase,
                          char* present, uint64_t* pbits) noexcept nogil:
    """Gather the next tile holding a key of the pass; return its first position (-1: none left).

    The next present key decides the tile [tstart, tstart + TILE); each of its keys goes to lane
    position - tstart: the starts of its key and value rows (Hkv * D elements of esize bytes,
    every KV head) into kbase and vbase (NULL: no key).  Three sources, each walked in
    increasing position: the sink slots (slot p holds position p < ns iff cpos[p] == p), the
    ring (position j >= ns in slot ns + (j - ns) mod C iff cpos[slot] == j) and the explicit
    keys.  present / pbits: the lanes holding a key.  Each KV head's tile is then built from
    these rows (_head_tile).
    """
    # Locals, not K-> and c-> fields: the char stores to present[] may alias any of those,
    # which would make the compiler reload them on every key.
    cdef const char* k = <const char*>K.k
    cdef const char* v = <const char*>K.v
    cdef const char* ck = <const char*>K.ck
    cdef const char* cv = <const char*>K.cv
    cdef const int64_t* cpos = K.cpos
    cdef const int64_t* k_pos = K.k_pos
    cdef Py_ssize_t C = K.C, ns = K.ns, row = K.Hkv * K.D * esize, j, slot = 0, e = c.e, eb = c.eb
    cdef int64_t pos = -1, tstart, tend, sp = c.sp, send = c.send, rp = c.rp, rend = c.rend
    cdef uint64_t bits = 0
    while sp <= send and cpos[sp] != sp:
        sp += 1
    # The ring's slot of rp, computed once and then stepped (one division per tile, not per key).
    if rp <= rend:
        slot = ns + (rp - ns) % C
    while rp <= rend and cpos[slot] != rp:
        rp += 1
        slot += 1
        if slot == ns + C:
            slot = ns
    # The sources hold disjoint position ranges (sink slots < ring < explicit keys): the
    # smallest next candidate starts the tile.
    if sp <= send:
        pos = sp
    if rp <= rend and (pos < 0 or rp < pos):
        pos = rp
    if e < eb and (pos < 0 or k_pos[e] < pos):
        pos = k_pos[e]
    if pos < 0:
        c.sp, c.rp = sp, rp
        return -1
    tstart = (pos // TILE) * TILE
    tend = tstart + TILE
    for j in range(TILE):
        present[j] = 0
        kbase[j] = NULL
        vbase[j] = NULL
    while sp <= send and sp < tend:
        if cpos[sp] == sp:
            _put_key(sp - tstart, ck + sp * row, cv + sp * row, kbase, vbase, present, &bits)
        sp += 1
    while rp <= rend and rp < tend:
        if cpos[slot] == rp:
            _put_key(rp - tstart, ck + slot * row, cv + slot * row, kbase, vbase, present, &bits)
        rp += 1
        slot += 1
        if slot == ns + C:
            slot = ns
    while e < eb and k_pos[e] < tend:
        _put_key(k_pos[e] - tstart, k + e * row, v + e * row, kbase, vbase, present, &bits)
        e += 1
    c.sp, c.rp, c.e = sp, rp, e
    pbits[0] = bits
    return tstart


cdef void _head_tile(const Keys* K, Py_ssize_t g, bint copy_v, const void** kbase, const void** vbase,
                     const char* present, floating* kt, floating* vt, const floating** vrows) noexcept nogil:
    """KV head g's tile from the gathered rows: its key slices transposed into kt[d * TILE + lane],
    its value slices pointed at in place (vrows) or, with copy_v, copied to vt at stride D."""
    cdef Py_ssize_t D = K.D, j
    for j in range(TILE):
        if present[j]:
            vrows[j] = <const floating*>vbase[j] + g * D
            if copy_v:
                memcpy(vt + j * D, vrows[j], D * sizeof(floating))
                vrows[j] = vt + j * D
    if floating is float:
        swaref_transpose_tile_f(kt, <const float* const*>kbase, g * D, D)
    else:
        swaref_transpose_tile_d(kt, <const double* const*>kbase, g * D, D)


cdef void _row_ranges(const Rows* R, const int64_t* lo, const int64_t* hi, int64_t tstart, uint64_t pbits,
                      Py_ssize_t* rja, Py_ssize_t* rjb) noexcept nogil:
    """Each row's visible lanes ja .. jb-1 of the tile: the positions lo[tq] .. hi[tq] of its
    query in this pass (lo NULL: from 0), the same for all heads of a query (present keys among
    them: pbits); ja = jb = 0 where none is present."""
    cdef Py_ssize_t tq, i, ja, jb
    for tq in range(R.nq):
        ja = 0
        if lo != NULL and lo[tq] > tstart:
            ja = lo[tq] - tstart
        jb = TILE
        if hi[tq] + 1 < tstart + TILE:
            jb = hi[tq] + 1 - tstart
        if ja >= jb or not (pbits & swaref_range_bits(<int>ja, <int>jb)):
            ja = jb = 0                                  # nothing visible: the rows skip this tile
        for i in range(R.G):
            rja[tq * R.G + i] = ja
            rjb[tq * R.G + i] = jb


cdef void _score_pass(const floating* q, const Rows* R, const floating* kt, floating scale, floating* sc,
                      const Py_ssize_t* rja, const Py_ssize_t* rjb) noexcept nogil:
    """Scores of every row with visible lanes: sc[r * TILE + j] = (q_r . k_j) * scale, then
    soft-capped (R.softcap: c * tanh(s / c), in the input precision, on the span just computed).

    SROWS rows at a time (any rows: lanes and rows are independent), one span of lanes after the
    other (the whole tile for float32, halves for float64).  A row skips spans outside its
    visible lanes (float64: the window's first and the diagonal tile); those lanes keep stale
    scores, which the softmax step masks like any invisible lane.
    """
    cdef Py_ssize_t r, i, l0 = 0, nact, span = SWAREF_SPAN_D, nsr = SWAREF_SROWS_D
    cdef const floating* qp[MAX_SROWS]
    cdef floating* sp[MAX_SROWS]
    cdef floating cap = <floating>R.softcap
    if floating is float:
        span = SWAREF_SPAN_F
        nsr = SWAREF_SROWS_F
    while l0 < TILE:
        nact = 0
        for r in range(R.n + 1):
            if r < R.n and rja[r] < rjb[r] and rja[r] < l0 + span and rjb[r] > l0:
                qp[nact] = _qrow(q, R, r)
                sp[nact] = sc + r * TILE + l0
                nact += 1
            if nact and (nact == nsr or r == R.n):
                if floating is float:
                    swaref_scores_rows_f(<int>nact, qp, kt + l0, R.D, scale, sp)
                else:
                    swaref_scores_rows_d(<int>nact, qp, kt + l0, R.D, scale, sp)
                for i in range(nact if R.softcap else 0):        # s = cap * tanh(s / cap), the span
                    if floating is float:
                        swaref_softcap_f(sp[i], span, cap)
                    else:
                        swaref_softcap_d(sp[i], span, cap)
                nact = 0
        l0 += span


cdef inline floating _softmax_tile(floating* s, uint64_t present, Py_ssize_t ja, Py_ssize_t jb,
                                   floating* m, floating* l) noexcept nogil:
    """Online-softmax step of one row over one tile (module docstring); returns alpha and leaves
    the weights in s (exactly 0 on lanes that are not visible: bit of present, ja <= lane < jb)."""
    if floating is float:
        return swaref_softmax_f(s, present, <int>ja, <int>jb, m, l)
    else:
        return swaref_softmax_d(s, present, <int>ja, <int>jb, m, l)


cdef inline void _value_rows(floating* o, const floating* al, const floating* sc, const floating** vrows,
                             const char* present, const Py_ssize_t* rja, const Py_ssize_t* rjb,
                             Py_ssize_t n, Py_ssize_t D) noexcept nogil:
    """o[r] = o[r] * al[r] + sum of sc[r, j] * vrows[j] over the visible lanes j of rows 0 .. n-1."""
    if floating is float:
        swaref_value_rows_f(o, al, sc, vrows, present, rja, rjb, 0, n, D, SWAREF_PVSPAN_F)
    else:
        swaref_value_rows_d(o, al, sc, vrows, present, rja, rjb, 0, n, D, SWAREF_PVSPAN_D)


cdef void _value_pass(const Rows* R, floating* sc, floating* o, floating* m, floating* l, floating* al,
                      const floating** vrows, const char* present, uint64_t pbits,
                      const Py_ssize_t* rja, const Py_ssize_t* rjb) noexcept nogil:
    """Softmax step of every row that sees the tile (weights into sc, alpha into al), then
    its value pass."""
    cdef Py_ssize_t r
    for r in range(R.n):
        if rja[r] < rjb[r]:
            al[r] = _softmax_tile(sc + r * TILE, pbits, rja[r], rjb[r], m + r, l + r)
    _value_rows(o, al, sc, vrows, present, rja, rjb, R.n, R.D)
