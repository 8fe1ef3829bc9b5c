"""Register-tiled small GEMMs for the fused narrow-layer kernels (Numba, CPU).

A layer of width w <= 64 multiplies an (s x w) block of states by a (w x w)
matrix: too small for BLAS to reach its rate (packing and call overhead
dominate) and too large for a plain triple loop (whose accumulators live in
memory). The routines here compute an ``MR x NR`` tile of a product with the
tile held in SIMD registers: the inner loop is written as LLVM vector IR by a
Numba intrinsic (:func:`_make_tile`), so its shape does not depend on what
LLVM's auto-vectorisers make of a loop nest (their choices varied with the
calling context by a factor of four in our measurements: gathers instead of
broadcast loads).

A tile holds ``NR = 8`` columns (one AVX-512 register of float64, one AVX2
register of float32) of ``MR = 8`` rows in either precision: eight independent
accumulations hide the FMA latency (float64 tiles had 4 rows until session 27;
8 rows measured one value-and-gradient 10 % faster at w = 128, s = 1000, and
1-4 % at w = 8 and 32, one thread, Zen 4). In float32, column blocks
of ``NRW = 16`` (one AVX-512 register) come first and 8-wide tiles take what is
left: per inner-dimension step a 16-wide tile loads one broadcast per 16 products
instead of per 8 (measured on Zen 4, one thread, s = 1024, w = 32: 104 GFLOP/s
against 65-83 for the 8-wide tile; in float64 a 16-wide tile, two registers a
row, was slower, 39 against 52, so float64 keeps 8). The width of a tile does not
change any sum: every entry is still one running sum in the order stated below.

Summation order (what makes every path bit-identical): an entry of a product is
summed from zero (or from its value in memory, for accumulating products) in
increasing index of the inner dimension, ``acc = fma(a, b, acc)`` one product at
a time (one rounding per product, ``llvm.fma``), in a full tile or in the scalar
tails alike. No reassociation happens (no fast-math flags). The FMAs are
explicit; against a separate multiply and add they measured 3-8 % faster
value-and-gradients in float32 (w = 32 and 128, one and two threads, Zen 4) and
the same time in float64.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .cpu_activations import _c, _fma

#: Columns of a register tile.
NR = 8
#: Columns of a wide (float32) register tile.
NRW = 16
#: Rows of a register tile per dtype (float64, float32).
MR64, MR32 = 8, 8


def _mr(like):
    """Rows of a full tile for ``like``, a number or an array's dtype (a compile-time
    constant)."""
    return MR64


@overload(_mr, inline="always")
def _mr_impl(like):
    if isinstance(like, types.DType):
        like = like.dtype
    if isinstance(like, types.Float) and like.bitwidth == 32:
        return lambda like: MR32
    return lambda like: MR64


def _nrw(like):
    """Columns of the widest tile for the dtype of ``like`` (a compile-time constant)."""
    return NR


@overload(_nrw, inline="always")
def _nrw_impl(like):
    if isinstance(like, types.Float) and like.bitwidth == 32:
        return lambda like: NRW
    return lambda like: NR


def _accumulating_loop(builder, n, acc0, body, name):
    """Emit ``for k in range(n): accs = body(k, accs)`` (LLVM IR), the accumulators
    starting at the values ``acc0`` and living in registers (phi nodes); return
    their final values (``acc0`` when n <= 0). ``n`` is an i64 value."""
    i64 = ir.IntType(64)
    pre = builder.basic_block
    loop = builder.append_basic_block(f"{name}.loop")
    done = builder.append_basic_block(f"{name}.done")
    builder.cbranch(builder.icmp_signed(">", n, ir.Constant(i64, 0)), loop, done)

    builder.position_at_end(loop)
    k = builder.phi(i64)
    k.add_incoming(ir.Constant(i64, 0), pre)
    accs = []
    for a in acc0:
        ph = builder.phi(a.type)
        ph.add_incoming(a, pre)
        accs.append(ph)
    new = body(k, accs)
    k1 = builder.add(k, ir.Constant(i64, 1))
    end = builder.basic_block
    k.add_incoming(k1, end)
    for ph, v in zip(accs, new, strict=True):
        ph.add_incoming(v, end)
    builder.cbranch(builder.icmp_signed("<", k1, n), loop, done)

    builder.position_at_end(done)
    fin = []
    for a, v in zip(acc0, new, strict=True):
        ph = builder.phi(a.type)
        ph.add_incoming(a, pre)
        ph.add_incoming(v, end)
        fin.append(ph)
    return fin


def _make_tile(full, pairs, nr=NR):
    """An intrinsic computing one tile ``acc (mr x nr)`` (``nr`` columns, 8 or 16).

    ``tile(C, oc, sc, A, oa, B, ob, A2, oa2, B2, ob2, sar, sak, sbk, n, init, bias, obias,
    add_bias)``: with element offsets into the flat data of each array,

        acc[r, :] = C[oc + r sc : + NR]          if init, else 0
        for k in 0 .. n-1:
            acc[r, :] = fma(A[oa + r sar + k sak], B[ob + k sbk : + NR], acc[r, :])
            (and then, for pairs == 2, the same with A2, oa2, B2, ob2)
        C[oc + r sc : + NR] = acc[r, :] (+ bias[obias : + NR] if add_bias)

    for r < mr (``MR64``/``MR32`` when ``full``, else 1). The caller guarantees
    that every addressed element lies inside its array.
    """

    @intrinsic
    def tile(typingctx, C, oc, sc, A, oa, B, ob, A2, oa2, B2, ob2, sar, sak, sbk, n, init,
             bias, obias, add_bias):
        dt = C.dtype
        sig = types.void(C, oc, sc, A, oa, B, ob, A2, oa2, B2, ob2, sar, sak, sbk, n, init,
                         bias, obias, add_bias)

        def codegen(context, builder, signature, args):
            (C_, oc_, sc_, A_, oa_, B_, ob_, A2_, oa2_, B2_, ob2_, sar_, sak_, sbk_, n_,
             init_, bias_, obias_, addb_) = args
            aty = signature.args
            ety = context.get_value_type(dt)
            isz = context.get_abi_sizeof(ety)
            mr = ((MR32 if dt.bitwidth == 32 else MR64) if full else 1)
            vty = ir.VectorType(ety, nr)
            vptr = vty.as_pointer()
            vfma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vty, [vty, vty, vty]),
                f"llvm.fma.v{nr}f{dt.bitwidth}")
            i64 = ir.IntType(64)
            i32 = ir.IntType(32)

            def data(t, v):
                return context.make_array(t)(context, builder, v).data

            def as64(v):
                return v if v.type == i64 else builder.sext(v, i64)

            pC, pA, pB = data(aty[0], C_), data(aty[3], A_), data(aty[5], B_)
            pA2, pB2, pbias = data(aty[7], A2_), data(aty[9], B2_), data(aty[16], bias_)
            oc_, sc_, oa_, ob_ = as64(oc_), as64(sc_), as64(oa_), as64(ob_)
            oa2_, ob2_, sar_, sak_ = as64(oa2_), as64(ob2_), as64(sar_), as64(sak_)
            sbk_, n_, obias_ = as64(sbk_), as64(n_), as64(obias_)

            def vload(base, off):
                p = builder.bitcast(builder.gep(base, [off]), vptr)
                return builder.load(p, align=isz)

            def vstore(val, base, off):
                p = builder.bitcast(builder.gep(base, [off]), vptr)
                builder.store(val, p, align=isz)

            zero_v = ir.Constant(vty, [ir.Constant(ety, 0.0)] * nr)
            splat_mask = ir.Constant(ir.VectorType(i32, nr), [0] * nr)
            undef_v = ir.Constant(vty, ir.Undefined)

            def splat(x):
                v = builder.insert_element(undef_v, x, ir.Constant(i32, 0))
                return builder.shuffle_vector(v, undef_v, splat_mask)

            row_off = [builder.add(oc_, builder.mul(sc_, ir.Constant(i64, r))) for r in range(mr)]
            acc0 = [builder.select(init_, vload(pC, row_off[r]), zero_v) for r in range(mr)]

            operands = [(pA, oa_, pB, ob_)]
            if pairs == 2:
                operands.append((pA2, oa2_, pB2, ob2_))

            def body(k, accs):
                new = list(accs)
                for (pa, oa, pb, ob) in operands:
                    vb = vload(pb, builder.add(ob, builder.mul(k, sbk_)))
                    base = builder.add(oa, builder.mul(k, sak_))
                    for r in range(mr):
                        off = builder.add(base, builder.mul(sar_, ir.Constant(i64, r)))
                        a = builder.load(builder.gep(pa, [off]), align=isz)
                        new[r] = builder.call(vfma, [splat(a), vb, new[r]])
                return new

            fin = _accumulating_loop(builder, n_, acc0, body, "tile")
            with builder.if_else(addb_) as (then, otherwise):
                with then:
                    bv = vload(pbias, obias_)
                    for r in range(mr):
                        vstore(builder.fadd(fin[r], bv), pC, row_off[r])
                with otherwise:
                    for r in range(mr):
                        vstore(fin[r], pC, row_off[r])
            return context.get_dummy_value()

        return sig, codegen

    return tile


_tile_full1 = _make_tile(True, 1)
_tile_full2 = _make_tile(True, 2)
_tile_one1 = _make_tile(False, 1)
_tile_one2 = _make_tile(False, 2)
_wtile_full1 = _make_tile(True, 1, NRW)
_wtile_full2 = _make_tile(True, 2, NRW)
_wtile_one1 = _make_tile(False, 1, NRW)
_wtile_one2 = _make_tile(False, 2, NRW)


def _make_colsum(nt, nr):
    """An intrinsic adding the rows of ``nt`` adjacent ``nr``-wide column tiles.

    ``colsum(g, og, D, od, ldd, n)``: with element offsets into the flat data,

        acc[t, :] = g[og + t nr : + nr]
        for k in 0 .. n-1:
            acc[t, :] = acc[t, :] + D[od + k ldd + t nr : + nr]
        g[og + t nr : + nr] = acc[t, :]

    for t < nt: one running sum per column, in row order (the bits of a scalar
    loop; the ``nt`` tiles are independent sums, so they hide each other's add
    latency). The caller guarantees that every addressed element lies inside
    its array.
    """

    @intrinsic
    def colsum(typingctx, g, og, D, od, ldd, n):
        dt = g.dtype
        sig = types.void(g, og, D, od, ldd, n)

        def codegen(context, builder, signature, args):
            g_, og_, D_, od_, ldd_, n_ = args
            aty = signature.args
            ety = context.get_value_type(dt)
            isz = context.get_abi_sizeof(ety)
            vty = ir.VectorType(ety, nr)
            vptr = vty.as_pointer()
            i64 = ir.IntType(64)

            def as64(v):
                return v if v.type == i64 else builder.sext(v, i64)

            pg = context.make_array(aty[0])(context, builder, g_).data
            pD = context.make_array(aty[2])(context, builder, D_).data
            og_, od_, ldd_, n_ = as64(og_), as64(od_), as64(ldd_), as64(n_)

            def vptr_at(base, off):
                return builder.bitcast(builder.gep(base, [off]), vptr)

            goff = [builder.add(og_, ir.Constant(i64, t * nr)) for t in range(nt)]
            acc0 = [builder.load(vptr_at(pg, goff[t]), align=isz) for t in range(nt)]

            def body(k, accs):
                row = builder.add(od_, builder.mul(k, ldd_))
                return [builder.fadd(accs[t], builder.load(
                    vptr_at(pD, builder.add(row, ir.Constant(i64, t * nr))), align=isz))
                    for t in range(nt)]

            fin = _accumulating_loop(builder, n_, acc0, body, "colsum")
            for t in range(nt):
                builder.store(fin[t], vptr_at(pg, goff[t]), align=isz)
            return context.get_dummy_value()

        return sig, codegen

    return colsum


#: Column sums: 4 tiles, 1 tile, of NR or NRW columns.
_colsum4 = _make_colsum(4, NR)
_colsum1 = _make_colsum(1, NR)
_wcolsum4 = _make_colsum(4, NRW)
_wcolsum1 = _make_colsum(1, NRW)


@njit(inline="always")
def _tiled_columns(n, nrw):
    """(nw, nt): columns [0, nw) in tiles of ``nrw``, [nw, nt) in tiles of NR, the rest
    scalar."""
    nw = n - n % nrw if nrw > NR else 0
    return nw, nw + (n - nw) - (n - nw) % NR


# ----------------------------------------------------------------------------
# C[i, j] = sum_k A[i, k] B[k, j] (+ A2[i, k] B2[k, j]) over rows i in [r0, r1)
# ----------------------------------------------------------------------------
@njit(cache=True, error_model="numpy")
def gemm_rows(A, B, C, r0, r1, bias, add_bias, A2, B2, two, ashift=0):
    """``C[r0:r1] = A[r0:r1] @ B (+ A2[r0:r1] @ B2) (+ bias)``, C-contiguous 2-D arrays.

    A, A2 (s, K), B, B2 (K, n), C (s, n); row i of C takes row ``i - ashift`` of A
    and A2 (a block buffer holding rows r0.. of A at 0.. has ``ashift = r0``).
    Entry (i, j) is the running sum (one FMA a product) from
    zero of ``A[i, k] B[k, j]`` (followed, for each k, by ``A2[i, k] B2[k, j]``
    when ``two``) over k = 0, 1, ...; then ``+ bias[j]`` when ``add_bias``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> A, B, b = rng.standard_normal((6, 3)), rng.standard_normal((3, 9)), np.ones(9)
    >>> C = np.empty((6, 9))
    >>> gemm_rows(A, B, C, 0, 6, b, True, A, B, False)
    >>> bool(np.allclose(C, A @ B + 1.0))
    True
    """
    K = A.shape[1]
    n = B.shape[1]
    lda, ldb, ldc = A.shape[1], B.shape[1], C.shape[1]
    mr = _mr(C[0, 0])
    nw, nt = _tiled_columns(n, _nrw(C[0, 0]))
    i = r0
    while i + mr <= r1:
        ia = (i - ashift) * lda
        for j in range(0, nw, NRW):
            if two:
                _wtile_full2(C, i * ldc + j, ldc, A, ia, B, j, A2, ia, B2, j,
                             lda, 1, ldb, K, False, bias, j, add_bias)
            else:
                _wtile_full1(C, i * ldc + j, ldc, A, ia, B, j, A, 0, B, 0,
                             lda, 1, ldb, K, False, bias, j, add_bias)
        for j in range(nw, nt, NR):
            if two:
                _tile_full2(C, i * ldc + j, ldc, A, ia, B, j, A2, ia, B2, j,
                            lda, 1, ldb, K, False, bias, j, add_bias)
            else:
                _tile_full1(C, i * ldc + j, ldc, A, ia, B, j, A, 0, B, 0,
                            lda, 1, ldb, K, False, bias, j, add_bias)
        i += mr
    while i < r1:
        ia = (i - ashift) * lda
        for j in range(0, nw, NRW):
            if two:
                _wtile_one2(C, i * ldc + j, ldc, A, ia, B, j, A2, ia, B2, j,
                            lda, 1, ldb, K, False, bias, j, add_bias)
            else:
                _wtile_one1(C, i * ldc + j, ldc, A, ia, B, j, A, 0, B, 0,
                            lda, 1, ldb, K, False, bias, j, add_bias)
        for j in range(nw, nt, NR):
            if two:
                _tile_one2(C, i * ldc + j, ldc, A, ia, B, j, A2, ia, B2, j,
                           lda, 1, ldb, K, False, bias, j, add_bias)
            else:
                _tile_one1(C, i * ldc + j, ldc, A, ia, B, j, A, 0, B, 0,
                           lda, 1, ldb, K, False, bias, j, add_bias)
        i += 1
    if nt < n:
        zero = _c(0.0, C[0, 0])
        for i in range(r0, r1):
            ii = i - ashift
            for j in range(nt, n):
                z = zero
                for k in range(K):
                    z = _fma(A[ii, k], B[k, j], z)
                    if two:
                        z = _fma(A2[ii, k], B2[k, j], z)
                C[i, j] = z + bias[j] if add_bias else z


# ----------------------------------------------------------------------------
# G[j, k] += sum_i D[i, j] X[i, k] (+ D2[i, j] X2[i, k]) over rows i in [r0, r1)
# ----------------------------------------------------------------------------
@njit(cache=True, error_model="numpy")
def gemm_tn_acc(D, X, D2, X2, two, G, r0, r1, dshift=0):
    """``G += D[r0:r1]^T X[r0:r1]`` (``+ D2[r0:r1]^T X2[r0:r1]`` when ``two``).

    D, D2 (s, m), X, X2 (s, n), G (m, n) C-contiguous; row i of X pairs with row
    ``i - dshift`` of D and D2 (see :func:`gemm_rows`). Entry (j, k) adds
    ``D[i, j] X[i, k]`` (then ``D2[i, j] X2[i, k]``) for i = r0, r0+1, ... in
    order, to the value in G: splitting the rows into consecutive calls gives
    the same bits as one call.
    """
    m = D.shape[1]
    n = X.shape[1]
    ldd, ldx, ldg = D.shape[1], X.shape[1], G.shape[1]
    nr = r1 - r0
    if nr <= 0:
        return
    mr = _mr(G[0, 0])
    nw, nt = _tiled_columns(n, _nrw(G[0, 0]))
    d0 = (r0 - dshift) * ldd
    j = 0
    while j < m:
        full = j + mr <= m
        for k in range(0, nw, NRW):
            if full:
                if two:
                    _wtile_full2(G, j * ldg + k, ldg, D, d0 + j, X, r0 * ldx + k,
                                 D2, d0 + j, X2, r0 * ldx + k, 1, ldd, ldx, nr, True,
                                 G[0], 0, False)
                else:
                    _wtile_full1(G, j * ldg + k, ldg, D, d0 + j, X, r0 * ldx + k,
                                 D, 0, X, 0, 1, ldd, ldx, nr, True, G[0], 0, False)
            else:
                if two:
                    _wtile_one2(G, j * ldg + k, ldg, D, d0 + j, X, r0 * ldx + k,
                                D2, d0 + j, X2, r0 * ldx + k, 1, ldd, ldx, nr, True,
                                G[0], 0, False)
                else:
                    _wtile_one1(G, j * ldg + k, ldg, D, d0 + j, X, r0 * ldx + k,
                                D, 0, X, 0, 1, ldd, ldx, nr, True, G[0], 0, False)
        for k in range(nw, nt, NR):
            if full:
                if two:
                    _tile_full2(G, j * ldg + k, ldg, D, d0 + j, X, r0 * ldx + k,
                                D2, d0 + j, X2, r0 * ldx + k, 1, ldd, ldx, nr, True,
                                G[0], 0, False)
                else:
                    _tile_full1(G, j * ldg + k, ldg, D, d0 + j, X, r0 * ldx + k,
                                D, 0, X, 0, 1, ldd, ldx, nr, True, G[0], 0, False)
            else:
                if two:
                    _tile_one2(G, j * ldg + k, ldg, D, d0 + j, X, r0 * ldx + k,
                               D2, d0 + j, X2, r0 * ldx + k, 1, ldd, ldx, nr, True,
                               G[0], 0, False)
                else:
                    _tile_one1(G, j * ldg + k, ldg, D, d0 + j, X, r0 * ldx + k,
                               D, 0, X, 0, 1, ldd, ldx, nr, True, G[0], 0, False)
        j += mr if full else 1
    if nt < n:
        for j in range(m):
            for k in range(nt, n):
                g = G[j, k]
                for i in range(r0, r1):
                    g = _fma(D[i - dshift, j], X[i, k], g)
                    if two:
                        g = _fma(D2[i - dshift, j], X2[i, k], g)
                G[j, k] = g


# ----------------------------------------------------------------------------
# g[j] += sum_i D[i, j] over rows i in [r0, r1)
# ----------------------------------------------------------------------------
@njit(cache=True, error_model="numpy")
def colsum_acc(D, g, r0, r1, dshift=0):
    """``g += D[r0 - dshift : r1 - dshift].sum(axis=0)``, one running sum per column.

    D (s, m) C-contiguous, g (m,) contiguous. Entry j adds ``D[i - dshift, j]``
    for i = r0, r0+1, ... in order to the value in g (the bias gradient of a
    block of deltas): the bits of the scalar loop, and splitting the rows into
    consecutive calls gives the same bits as one call. The columns are summed
    in SIMD tiles, four independent tiles at a time.

    Examples
    --------
    >>> import numpy as np
    >>> D = np.arange(12.0).reshape(4, 3)
    >>> g = np.ones(3)
    >>> colsum_acc(D, g, 1, 4)
    >>> g
    array([19., 22., 25.])
    """
    m = D.shape[1]
    if r1 <= r0:
        return
    n = r1 - r0
    d0 = (r0 - dshift) * m
    nrw = _nrw(g[0])
    j = 0
    if nrw > NR:
        while j + 4 * NRW <= m:
            _wcolsum4(g, j, D, d0 + j, m, n)
            j += 4 * NRW
        while j + NRW <= m:
            _wcolsum1(g, j, D, d0 + j, m, n)
            j += NRW
    while j + 4 * NR <= m:
        _colsum4(g, j, D, d0 + j, m, n)
        j += 4 * NR
    while j + NR <= m:
        _colsum1(g, j, D, d0 + j, m, n)
        j += NR
    for jj in range(j, m):
        a = g[jj]
        for i in range(r0 - dshift, r1 - dshift):
            a += D[i, jj]
        g[jj] = a
