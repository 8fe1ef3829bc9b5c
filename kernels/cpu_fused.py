"""Fused narrow-layer kernels (Numba, CPU): a block of samples through a whole layer step.

For layers of width w <= :data:`mgnn.kernels.cpu.FUSED_MAX_WIDTH` the product
with the weights, the bias, the activation, the skip connection (forward), and
the delta, input adjoint and weight/bias gradient (adjoint) are computed block
of rows by block of rows while the block is in the L1 cache, with the small
GEMMs in register tiles (:mod:`mgnn.kernels.cpu_tiles`). Threads (``prange``)
work on chunks of samples.

Reproducibility
---------------
* Every output row is computed from its input rows alone, in the same order of
  operations whatever the chunking: states, records, deltas and input adjoints
  are bit-identical for any thread count, block size and path (single step,
  batched step, whole sweep).
* Weight and bias gradients are sums over samples. The samples are split into
  ``C = n_chunks(s, w)`` consecutive chunks, a function of the batch size and the
  layer width only (never of the thread count); chunk ``c`` sums its rows in
  order into its own partial gradient, and the partials are added in chunk order
  (0, then 1, ...). So gradients, too, are bit-identical for any thread count and
  on every path (the sweep kernels call the same layer code as the single
  steps).

All kernels take C-contiguous arrays; :mod:`mgnn.kernels.cpu` checks shapes and
brings strided arguments into that form.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload
from numba.np.arrayobj import populate_array

from .cpu_activations import IDENTITY, RELU, SMOOTH_RELU, TANH, _d2sigma, _dsigma, _sigma
from .cpu_tiles import _mr, colsum_acc, gemm_rows, gemm_tn_acc

#: Largest number of sample chunks a gradient is split into (a power of two).
MAX_CHUNKS = 16
#: A chunk keeps at least this many rows, and at least min(4 w, MAX_LEAST_ROWS) (so
#: that the partial gradients, C w^2 numbers, stay small next to the states, 2 s w
#: numbers).
MIN_CHUNK_ROWS = 64
#: Rows per chunk of the forward and tangent sweeps (no reduction: any split
#: gives the same bits; small chunks keep a chunk's states in cache across layers).
SWEEP_ROWS = 128
#: Elements of one row block (rows x width) processed while it sits in L1.
BLOCK_ELEMS = 1024
#: Wide layers take blocks of up to MIN_BLOCK_ROWS rows, as many as fit in
#: BLOCK_BYTES: the weight-gradient tile of D^T U is loaded and stored once per
#: block, so 8-row blocks at w = 128 spent their time moving G, while 32 rows of
#: float64 spill L1. Measured, adjoint sweep at s = 1000, one thread, ms per layer:
#: float32 w = 128 rows 8 / 16 / 32 / 64: 0.81 / 0.78 / 0.77 / 0.77; float64 w = 128:
#: 1.79 / 1.67 / 1.83 / 1.93 (so 32 rows and 16 rows, 16 KiB each).
MIN_BLOCK_ROWS = 32
BLOCK_BYTES = 16384
#: Rows per chunk are at least ``min(4 w, MAX_LEAST_ROWS)``: wide layers (w = 128)
#: still split s = 1000 samples into 2 chunks for 2 threads.
MAX_LEAST_ROWS = 256
#: The adjoint sweeps run groups of layers per parallel region, about this many
#: state elements (layers x s x w) a group. Measured, float32 adjoint sweep, N = 64,
#: ms (layers a group; one region per layer = 1):
#: w = 32, s = 1000, 2 threads: 2.90 (1), 1.89 (16), 1.96 (64);
#: w = 8, s = 1000, 2 threads: 0.70 (1), 0.49 (16), 0.39 (64);
#: w = 32, s = 5000, 1 / 2 threads: 22.9 / 12.1 (1), 21.8-22.6 / 11.5-12.6 (2-8),
#: 25.3 / 14.4 (64): long groups lose the stream prefetch of layer-long reads.
SWEEP_GROUP_ELEMS = 1 << 19
#: The adjoint step prefetches the record and state rows this many row blocks ahead,
#: a tile's rows at a time between the tiles of ``L = D W``, for layers at least
#: PREFETCH_MIN_WIDTH wide (the hardware prefetcher alone leaves the reads exposed:
#: at w = 32 the adjoint ran 25 % slower out of cache than in it). Measured, one
#: value-and-gradient, ms without / with (distance 2 blocks, L2 hint): float64 w = 32
#: N = 64 s = 5000, one thread: 72.7-77.9 / 65.1-67.1; N = 256 s = 1000, two threads:
#: 31.0-31.6 / 27.9-28.2; float32 w = 32 N = 64 s = 5000, one thread: 34.4-35.1 /
#: 31.6-32.5; float32 w = 128: 74.0-74.6 / 73.6; distance 1: 5-10 % less gain, 4:
#: half of it. At w = 8 the row pieces cost more than the prefetch saves (float64
#: N = 256 s = 5000: 48-49 / 54 ms), so narrow layers do without. Past the last rows
#: of a call the prefetch goes on into the rows the caller takes next (float64 w = 32
#: N = 64 s = 1000, one thread: 14.1-14.3 / 13.1-13.3 ms). The second-order adjoint
#: sweep, the same way: float64 w = 32 N = 64 s = 1000, one thread, 19.4-20.0 /
#: 17.3-17.8 ms; N = 256, two threads, 41.1-41.9 / 34.4-35.9; float32 w = 32 N = 64
#: s = 5000, one thread, 47.3-49.3 / 43.9-44.7.
PREFETCH_BLOCKS = 2
PREFETCH_MIN_WIDTH = 32
#: Bytes of a cache line (one prefetch each).
CACHE_LINE = 64


@intrinsic
def _prefetch(typingctx, flat, idx):
    """Hint the cache line of ``flat[idx]`` into L2 (``llvm.prefetch``, read, locality 2).

    No effect on any result; an address outside the array is never formed by callers.
    """
    sig = types.void(flat, idx)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        i = args[1]
        if i.type != ir.IntType(64):
            i = builder.sext(i, ir.IntType(64))
        i8p = builder.bitcast(builder.gep(ary.data, [i]), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p.type, i32, i32, i32]),
            "llvm.prefetch.p0")
        builder.call(fn, [i8p, ir.Constant(i32, 0), ir.Constant(i32, 2), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


def _flat(a):
    """The 1-D view of the flat data of an array (``a.reshape(-1)``)."""
    return a.reshape(-1)


@intrinsic
def _flat_c(typingctx, a):
    """The 1-D view of a C-contiguous array, built in place.

    ``reshape(-1)`` calls Numba's no-copy-reshape helper, about 16 ns a call,
    which the row kernels paid for seven arrays a call (one call per chunk and
    layer: about a tenth of a float32 w = 8 adjoint sweep). The view borrows
    ``a``'s memory without a reference (no meminfo, so no atomic reference
    counting either): it is valid while ``a`` is, and the kernels use it only
    inside the call that received ``a``, never return or store it.
    """
    if not (isinstance(a, types.Array) and a.layout == "C"):
        return None
    rty = a.copy(ndim=1, layout="C")

    def codegen(context, builder, signature, args):
        aty = signature.args[0]
        src = context.make_array(aty)(context, builder, args[0])
        out = context.make_array(rty)(context, builder)
        isz = context.get_constant(types.intp, context.get_abi_sizeof(
            context.get_data_type(aty.dtype)))
        populate_array(out, data=src.data, shape=[src.nitems], strides=[isz],
                       itemsize=src.itemsize,
                       meminfo=cgutils.get_null_value(src.meminfo.type),
                       parent=cgutils.get_null_value(src.parent.type))
        return out._getvalue()

    return rty(a), codegen


@overload(_flat, inline="always")
def _flat_impl(a):
    if isinstance(a, types.Array) and a.layout == "C":
        return lambda a: _flat_c(a)
    return lambda a: a.reshape(-1)


@njit(inline="always")
def _prefetch_rows(flat, r0, r1, width):
    """Prefetch rows [r0, r1) of a C-contiguous (rows, width) array given flat."""
    for t in range(r0 * width, r1 * width, CACHE_LINE // flat.itemsize):
        _prefetch(flat, t)


@njit(inline="always")
def _prefetch_ahead(flat, xflat, q0, n, r1, xr0, xs, width):
    """Prefetch rows [q0, q0 + n) of a call on rows [.., r1): those below r1 from
    ``flat``, those past it from ``xflat`` (the array the caller takes next, its
    row xr0 standing for row r1; xs rows)."""
    _prefetch_rows(flat, q0, min(q0 + n, r1), width)
    _prefetch_rows(xflat, xr0 + max(q0, r1) - r1, min(xr0 + q0 + n - r1, xs), width)


@njit(cache=True)
def n_chunks(s, w):
    """Number of sample chunks a weight gradient of an (s, w) layer is summed in.

    The largest power of two ``C <= MAX_CHUNKS`` with
    ``s // C >= max(64, min(4 w, 256))`` (1 for small batches). Depends on ``s``
    and ``w`` only, never on threads.

    Examples
    --------
    >>> n_chunks(64, 32), n_chunks(1000, 32), n_chunks(5000, 32)
    (1, 4, 16)
    >>> n_chunks(1000, 128), n_chunks(5000, 128)
    (2, 16)
    """
    C = 1
    least = max(MIN_CHUNK_ROWS, min(4 * w, MAX_LEAST_ROWS))
    while C < MAX_CHUNKS and s // (2 * C) >= least:
        C *= 2
    return C


@njit(inline="always")
def _block_rows(w, itemsize):
    w = max(w, 1)
    return max(4, BLOCK_ELEMS // w, min(MIN_BLOCK_ROWS, BLOCK_BYTES // (w * itemsize)))


@njit(inline="always")
def _transpose(W, WT):
    m, n = W.shape
    for j in range(m):
        for k in range(n):
            WT[k, j] = W[j, k]


# ----------------------------------------------------------------------------
# elementwise passes over flat index ranges [lo, hi); the activation is a
# constant inside each loop (dispatch outside), so that every loop vectorises
# ----------------------------------------------------------------------------
@njit(inline="always", error_model="numpy")
def _ew_fwd_c(z_, o_, u_, lo, hi, h, act, skip):
    # loops over slices from 0: a signed range(lo, hi) does not vectorise (Numba's
    # negative-index wraparound)
    keep_a = act == TANH
    zs, os = z_[lo:hi], o_[lo:hi]
    if skip:
        us = u_[lo:hi]
        for t in range(zs.size):
            z = zs[t]
            y = _sigma(z, act)
            zs[t] = y if keep_a else z
            os[t] = us[t] + h * y
    else:
        for t in range(zs.size):
            z = zs[t]
            y = _sigma(z, act)
            zs[t] = y if keep_a else z
            os[t] = h * y


@njit(inline="always", error_model="numpy")
def _ew_fwd(z_, o_, u_, lo, hi, h, act, skip):
    """z <- record, out = skip*u + h sigma(z)."""
    if act == TANH:
        _ew_fwd_c(z_, o_, u_, lo, hi, h, TANH, skip)
    elif act == RELU:
        _ew_fwd_c(z_, o_, u_, lo, hi, h, RELU, skip)
    elif act == SMOOTH_RELU:
        _ew_fwd_c(z_, o_, u_, lo, hi, h, SMOOTH_RELU, skip)
    else:
        _ew_fwd_c(z_, o_, u_, lo, hi, h, IDENTITY, skip)


@njit(inline="always", error_model="numpy")
def _ew_delta_c(s_, l_, d_, lo, hi, dlo, h, act):
    ss, ls, ds = s_[lo:hi], l_[lo:hi], d_[dlo:dlo + hi - lo]
    for t in range(ds.size):
        ds[t] = h * _dsigma(ss[t], act) * ls[t]


@njit(inline="always", error_model="numpy")
def _ew_delta(s_, l_, d_, lo, hi, dlo, h, act):
    """d[dlo:] = h sigma'(s) l over [lo, hi)."""
    if act == TANH:
        _ew_delta_c(s_, l_, d_, lo, hi, dlo, h, TANH)
    elif act == RELU:
        _ew_delta_c(s_, l_, d_, lo, hi, dlo, h, RELU)
    elif act == SMOOTH_RELU:
        _ew_delta_c(s_, l_, d_, lo, hi, dlo, h, SMOOTH_RELU)
    else:
        _ew_delta_c(s_, l_, d_, lo, hi, dlo, h, IDENTITY)


@njit(inline="always", error_model="numpy")
def _ew_tan_c(z_, s_, o_, u_, lo, hi, h, act, use_u):
    zs, ss, os = z_[lo:hi], s_[lo:hi], o_[lo:hi]
    if use_u:
        us = u_[lo:hi]
        for t in range(os.size):
            os[t] = us[t] + h * _dsigma(ss[t], act) * zs[t]
    else:
        for t in range(os.size):
            os[t] = h * _dsigma(ss[t], act) * zs[t]


@njit(inline="always", error_model="numpy")
def _ew_tan(z_, s_, o_, u_, lo, hi, h, act, use_u):
    """out = use_u*u + h sigma'(s) z."""
    if act == TANH:
        _ew_tan_c(z_, s_, o_, u_, lo, hi, h, TANH, use_u)
    elif act == RELU:
        _ew_tan_c(z_, s_, o_, u_, lo, hi, h, RELU, use_u)
    elif act == SMOOTH_RELU:
        _ew_tan_c(z_, s_, o_, u_, lo, hi, h, SMOOTH_RELU, use_u)
    else:
        _ew_tan_c(z_, s_, o_, u_, lo, hi, h, IDENTITY, use_u)


@njit(inline="always", error_model="numpy")
def _ew_so_c(s_, z_, l_, dl_, d_, dd_, lo, hi, dlo, h, act):
    ss, zs, ls, dls = s_[lo:hi], z_[lo:hi], l_[lo:hi], dl_[lo:hi]
    ds, dds = d_[dlo:dlo + hi - lo], dd_[dlo:dlo + hi - lo]
    for t in range(ds.size):
        r = ss[t]
        d1 = _dsigma(r, act)
        ds[t] = h * d1 * ls[t]
        dds[t] = h * (_d2sigma(r, act) * zs[t] * ls[t] + d1 * dls[t])


@njit(inline="always", error_model="numpy")
def _ew_so(s_, z_, l_, dl_, d_, dd_, lo, hi, dlo, h, act):
    """d = h sigma'(s) l, dd = h (sigma''(s) z l + sigma'(s) dl) (d, dd from dlo)."""
    if act == TANH:
        _ew_so_c(s_, z_, l_, dl_, d_, dd_, lo, hi, dlo, h, TANH)
    elif act == RELU:
        _ew_so_c(s_, z_, l_, dl_, d_, dd_, lo, hi, dlo, h, RELU)
    elif act == SMOOTH_RELU:
        _ew_so_c(s_, z_, l_, dl_, d_, dd_, lo, hi, dlo, h, SMOOTH_RELU)
    else:
        _ew_so_c(s_, z_, l_, dl_, d_, dd_, lo, hi, dlo, h, IDENTITY)


@njit(inline="always", error_model="numpy")
def _ew_add(o_, x_, lo, hi):
    os, xs = o_[lo:hi], x_[lo:hi]
    for t in range(os.size):
        os[t] += xs[t]


# ----------------------------------------------------------------------------
# one layer on rows [r0, r1): the code every path runs
# ----------------------------------------------------------------------------
@njit(cache=True, error_model="numpy")
def _forward_rows(U, WT, b, h, act, skip, S, out, r0, r1):
    """out = skip*U + h sigma(U W^T + b), S = record, on rows [r0, r1)."""
    wo = S.shape[1]
    rb = _block_rows(max(U.shape[1], wo), S.itemsize)
    z_ = _flat(S)
    o_ = _flat(out)
    u_ = _flat(U)
    for a in range(r0, r1, rb):
        e = min(a + rb, r1)
        gemm_rows(U, WT, S, a, e, b, True, U, WT, False)
        _ew_fwd(z_, o_, u_, a * wo, e * wo, h, act, skip)


@njit(cache=True, error_model="numpy")
def _adjoint_rows(Ln, U, W, S, h, act, D, L, want_L, G, gb, want_g, skip, r0, r1, keep_D,
                  Sx, Ux, xr0):
    """D = h sigma'(S) Ln; L = D W (+ Ln); G += D^T U; gb += sum_rows D; rows [r0, r1).

    With ``keep_D`` False, D lives in a block buffer (never streamed to memory);
    the other outputs are the same bits either way. For ``wo >=
    PREFETCH_MIN_WIDTH`` the rows of S and U PREFETCH_BLOCKS blocks ahead are
    prefetched between the row tiles of ``L = D W`` (same bits: a row's sums do not
    depend on how the rows are split); past r1 the prefetch goes on with the rows
    from ``xr0`` of ``Sx`` and ``Ux``, the record and state the caller takes next
    (``S, U, r1``: the next rows of this layer; ``xr0 = s``: nothing).
    """
    wo = S.shape[1]
    wi = U.shape[1]
    rb = _block_rows(max(wi, wo), S.itemsize)
    pf = want_L and wo >= PREFETCH_MIN_WIDTH
    tile = _mr(S.dtype)  # the row tile of gemm_rows
    u_ = _flat(U)
    sx_ = _flat(Sx)
    ux_ = _flat(Ux)
    xs = Sx.shape[0]
    Db = D if keep_D else np.empty((max(min(rb, r1 - r0), 1), wo), D.dtype)
    s_ = _flat(S)
    l_ = _flat(Ln)
    d_ = _flat(Db)
    o_ = _flat(L)
    for a in range(r0, r1, rb):
        e = min(a + rb, r1)
        sh = 0 if keep_D else a
        _ew_delta(s_, l_, d_, a * wo, e * wo, (a - sh) * wo, h, act)
        if want_g:
            colsum_acc(Db, gb, a, e, sh)
            gemm_tn_acc(Db, U, Db, U, False, G, a, e, sh)
        if pf:
            ahead = a + PREFETCH_BLOCKS * rb
            for i in range(a, e, tile):
                gemm_rows(Db, W, L, i, min(i + tile, e), gb, False, Db, W, False, sh)
                q0 = ahead + i - a
                _prefetch_ahead(s_, sx_, q0, tile, r1, xr0, xs, wo)
                _prefetch_ahead(u_, ux_, q0, tile, r1, xr0, xs, wi)
        elif want_L:
            gemm_rows(Db, W, L, a, e, gb, False, Db, W, False, sh)
        if want_L and skip:
            _ew_add(o_, l_, a * wo, e * wo)


@njit(cache=True, error_model="numpy")
def _tangent_rows(U, dU, WT, dWT, db, S, h, act, has_dU, has_dW, skip, dZ, out, r0, r1):
    """dZ = dU W^T + U dW^T + db (one running sum), out = skip*dU + h sigma'(S) dZ."""
    wo = S.shape[1]
    rb = _block_rows(max(U.shape[1], wo), S.itemsize)
    z_ = _flat(dZ)
    s_ = _flat(S)
    o_ = _flat(out)
    u_ = _flat(dU)
    for a in range(r0, r1, rb):
        e = min(a + rb, r1)
        if has_dU and has_dW:
            gemm_rows(dU, WT, dZ, a, e, db, True, U, dWT, True)
        elif has_dU:
            gemm_rows(dU, WT, dZ, a, e, db, True, dU, WT, False)
        elif has_dW:
            gemm_rows(U, dWT, dZ, a, e, db, True, U, dWT, False)
        else:
            for i in range(a, e):
                for j in range(wo):
                    dZ[i, j] = db[j]
        _ew_tan(z_, s_, o_, u_, a * wo, e * wo, h, act, skip and has_dU)


@njit(cache=True, error_model="numpy")
def _soadjoint_rows(Ln, dLn, U, dU, W, dW, S, dZ, h, act, D, dD, L, dL, G, gb, dG, dgb,
                    want_L, want_dL, want_g, want_dg, has_dU, has_dW, skip, r0, r1, keep_D,
                    Sx, dZx, Ux, dUx, xr0):
    """The second-order adjoint step on rows [r0, r1) (see ``soadjoint_step``).

    D = h sigma' Ln, dD = h (sigma'' dZ Ln + sigma' dLn); L = D W (+ Ln);
    dL = dD W + D dW (+ dLn); G += D^T U; dG += dD^T U + D^T dU (per row, in this
    order); gb, dgb += column sums of D, dD. With ``keep_D`` False, D and dD live
    in block buffers. Prefetch as in :func:`_adjoint_rows`, of S, dZ, U (and dU),
    between the row tiles of L and dL; past r1 from ``Sx, dZx, Ux, dUx`` at row
    ``xr0``.
    """
    wo = S.shape[1]
    wi = U.shape[1]
    rb = _block_rows(max(wi, wo), S.itemsize)
    pf = (want_L or want_dL) and wo >= PREFETCH_MIN_WIDTH
    tile = _mr(S.dtype)
    xs = Sx.shape[0]
    u_, du_ = _flat(U), _flat(dU)
    sx_, zx_, ux_, dux_ = _flat(Sx), _flat(dZx), _flat(Ux), _flat(dUx)
    nb = max(min(rb, r1 - r0), 1)
    Db = D if keep_D else np.empty((nb, wo), D.dtype)
    dDb = dD if keep_D else np.empty((nb, wo), D.dtype)
    s_ = _flat(S)
    z_ = _flat(dZ)
    l_ = _flat(Ln)
    dl_ = _flat(dLn)
    d_ = _flat(Db)
    dd_ = _flat(dDb)
    o_ = _flat(L)
    do_ = _flat(dL)
    for a in range(r0, r1, rb):
        e = min(a + rb, r1)
        sh = 0 if keep_D else a
        _ew_so(s_, z_, l_, dl_, d_, dd_, a * wo, e * wo, (a - sh) * wo, h, act)
        if want_g:
            colsum_acc(Db, gb, a, e, sh)
            gemm_tn_acc(Db, U, Db, U, False, G, a, e, sh)
        if want_dg:
            colsum_acc(dDb, dgb, a, e, sh)
            gemm_tn_acc(dDb, U, Db, dU, has_dU, dG, a, e, sh)
        if pf:
            ahead = a + PREFETCH_BLOCKS * rb
            for i in range(a, e, tile):
                _so_input_adjoints(Db, dDb, W, dW, L, dL, gb, i, min(i + tile, e), sh,
                                   want_L, want_dL, has_dW)
                q0 = ahead + i - a
                _prefetch_ahead(s_, sx_, q0, tile, r1, xr0, xs, wo)
                _prefetch_ahead(z_, zx_, q0, tile, r1, xr0, xs, wo)
                _prefetch_ahead(u_, ux_, q0, tile, r1, xr0, xs, wi)
                if has_dU:
                    _prefetch_ahead(du_, dux_, q0, tile, r1, xr0, xs, wi)
        else:
            _so_input_adjoints(Db, dDb, W, dW, L, dL, gb, a, e, sh, want_L, want_dL, has_dW)
        if want_L and skip:
            _ew_add(o_, l_, a * wo, e * wo)
        if want_dL and skip:
            _ew_add(do_, dl_, a * wo, e * wo)


@njit(inline="always")
def _so_input_adjoints(Db, dDb, W, dW, L, dL, gb, a, e, sh, want_L, want_dL, has_dW):
    """Rows [a, e) of L = D W and dL = dD W (+ D dW) (gb: an unused bias argument)."""
    if want_L:
        gemm_rows(Db, W, L, a, e, gb, False, Db, W, False, sh)
    if want_dL:
        if has_dW:
            gemm_rows(dDb, W, dL, a, e, gb, False, Db, dW, True, sh)
        else:
            gemm_rows(dDb, W, dL, a, e, gb, False, dDb, W, False, sh)


@njit(inline="always")
def _rows(c, C, s):
    return (c * s) // C, ((c + 1) * s) // C


@njit(inline="always")
def _zero(a):
    f = _flat(a)
    for t in range(f.size):
        f[t] = 0


@njit(inline="always")
def _add_into(acc, part):
    f = _flat(acc)
    p = _flat(part)
    for t in range(f.size):
        f[t] += p[t]


# ----------------------------------------------------------------------------
# one layer, threads over sample chunks
# ----------------------------------------------------------------------------
@njit(cache=True, parallel=True, error_model="numpy")
def _forward_layer(U, W, b, h, act, skip, S, out):
    s = U.shape[0]
    WT = np.empty((W.shape[1], W.shape[0]), W.dtype)
    _transpose(W, WT)
    nch = (s + SWEEP_ROWS - 1) // SWEEP_ROWS
    if nch == 1:
        _forward_rows(U, WT, b, h, act, skip, S, out, 0, s)
        return
    for c in prange(nch):
        _forward_rows(U, WT, b, h, act, skip, S, out, c * SWEEP_ROWS,
                      min(s, (c + 1) * SWEEP_ROWS))


@njit(cache=True, parallel=True, error_model="numpy")
def _adjoint_layer(Ln, U, W, S, h, act, D, L, want_L, G, gb, want_g, skip, Pg, Pb, keep_D):
    """One adjoint step; Pg (>= C-1, wo, wi), Pb (>= C-1, wo) hold chunk partials."""
    s = S.shape[0]
    C = n_chunks(s, max(U.shape[1], S.shape[1]))
    if want_g:
        _zero(G)
        _zero(gb)
    if C == 1:
        _adjoint_rows(Ln, U, W, S, h, act, D, L, want_L, G, gb, want_g, skip, 0, s, keep_D,
                      S, U, s)
        return
    for c in prange(C):
        r0, r1 = _rows(c, C, s)
        if c == 0:
            _adjoint_rows(Ln, U, W, S, h, act, D, L, want_L, G, gb, want_g, skip, r0, r1,
                          keep_D, S, U, r1)
        else:
            Gc = Pg[c - 1]
            bc = Pb[c - 1]
            if want_g:
                _zero(Gc)
                _zero(bc)
            _adjoint_rows(Ln, U, W, S, h, act, D, L, want_L, Gc, bc, want_g, skip, r0, r1,
                          keep_D, S, U, r1)
    if want_g:
        for c in range(1, C):
            _add_into(G, Pg[c - 1])
            _add_into(gb, Pb[c - 1])


@njit(cache=True, parallel=True, error_model="numpy")
def _tangent_layer(U, dU, W, dW, db, S, h, act, has_dU, has_dW, skip, dZ, out):
    s = U.shape[0]
    WT = np.empty((W.shape[1], W.shape[0]), W.dtype)
    dWT = np.empty((W.shape[1], W.shape[0]), W.dtype)
    _transpose(W, WT)
    if has_dW:
        _transpose(dW, dWT)
    nch = (s + SWEEP_ROWS - 1) // SWEEP_ROWS
    if nch == 1:
        _tangent_rows(U, dU, WT, dWT, db, S, h, act, has_dU, has_dW, skip, dZ, out, 0, s)
        return
    for c in prange(nch):
        _tangent_rows(U, dU, WT, dWT, db, S, h, act, has_dU, has_dW, skip, dZ, out,
                      c * SWEEP_ROWS, min(s, (c + 1) * SWEEP_ROWS))


@njit(cache=True, parallel=True, error_model="numpy")
def _soadjoint_layer(Ln, dLn, U, dU, W, dW, S, dZ, h, act, D, dD, L, dL, G, gb, dG, dgb,
                     want_L, want_dL, want_g, want_dg, has_dU, has_dW, skip, P, keep_D):
    """One second-order adjoint step; P (>= C-1, 2, wo*wi + wo) holds chunk partials."""
    s = S.shape[0]
    wo, wi = W.shape
    C = n_chunks(s, max(wi, wo))
    if want_g:
        _zero(G)
        _zero(gb)
    if want_dg:
        _zero(dG)
        _zero(dgb)
    if C == 1:
        _soadjoint_rows(Ln, dLn, U, dU, W, dW, S, dZ, h, act, D, dD, L, dL, G, gb, dG, dgb,
                        want_L, want_dL, want_g, want_dg, has_dU, has_dW, skip, 0, s, keep_D,
                        S, dZ, U, dU, s)
        return
    for c in prange(C):
        r0, r1 = _rows(c, C, s)
        if c == 0:
            _soadjoint_rows(Ln, dLn, U, dU, W, dW, S, dZ, h, act, D, dD, L, dL, G, gb, dG,
                            dgb, want_L, want_dL, want_g, want_dg, has_dU, has_dW, skip, r0, r1,
                            keep_D, S, dZ, U, dU, r1)
        else:
            p = P[c - 1]
            _zero(p)
            Gc = p[0, : wo * wi].reshape((wo, wi))
            bc = p[0, wo * wi:]
            dGc = p[1, : wo * wi].reshape((wo, wi))
            dbc = p[1, wo * wi:]
            _soadjoint_rows(Ln, dLn, U, dU, W, dW, S, dZ, h, act, D, dD, L, dL, Gc, bc, dGc,
                            dbc, want_L, want_dL, want_g, want_dg, has_dU, has_dW, skip, r0, r1,
                            keep_D, S, dZ, U, dU, r1)
    for c in range(1, C):
        p = P[c - 1]
        if want_g:
            _add_into(G, p[0, : wo * wi])
            _add_into(gb, p[0, wo * wi:])
        if want_dg:
            _add_into(dG, p[1, : wo * wi])
            _add_into(dgb, p[1, wo * wi:])


# ----------------------------------------------------------------------------
# whole sweeps over the residual layers n0 .. n1-1 (params: flat blocks [W_n, b_n])
# ----------------------------------------------------------------------------
@njit(inline="always")
def _layer(P, n, w):
    bs = w * w + w
    o = n * bs
    return P[o: o + w * w].reshape((w, w)), P[o + w * w: o + bs]


@njit(inline="always")
def _transposes(P, n0, n1, w):
    """W_n^T of the layers n0 .. n1-1 of the flat blocks P, once per sweep (transposing
    inside the chunk loop repeated it for every chunk: at w = 128, s = 1000 that was
    about a tenth of a forward sweep)."""
    WT = np.empty((max(n1 - n0, 1), w, w), P.dtype)
    for n in range(n0, n1):
        W, _ = _layer(P, n, w)
        _transpose(W, WT[n - n0])
    return WT


@njit(cache=True, parallel=True, error_model="numpy")
def forward_sweep(U, P, h, act, S, n0, n1):
    """U[n+1] = U[n] + h sigma(U[n] W_n^T + b_n), S[n] = record, for n0 <= n < n1.

    U (N+1, s, w), S (N, s, w), P the residual parameters (N (w^2 + w),). Threads
    take chunks of :data:`SWEEP_ROWS` samples through all the layers. Bit-identical
    to calling the single forward step layer by layer.
    """
    s, w = U.shape[1], U.shape[2]
    nch = (s + SWEEP_ROWS - 1) // SWEEP_ROWS
    WT = _transposes(P, n0, n1, w)
    for c in prange(nch):
        r0, r1 = c * SWEEP_ROWS, min(s, (c + 1) * SWEEP_ROWS)
        for n in range(n0, n1):
            _, b = _layer(P, n, w)
            _forward_rows(U[n], WT[n - n0], b, h, act, True, S[n], U[n + 1], r0, r1)


@njit(inline="always")
def _group_layers(s, w, n):
    """Layers per parallel region of an adjoint sweep (see :data:`SWEEP_GROUP_ELEMS`)."""
    return max(1, min(n, SWEEP_GROUP_ELEMS // max(s * w, 1)))


@njit(inline="always")
def _chunk_block(G, Pg, c, n, top, w):
    """The zeroed (weight, bias) block chunk c sums layer n's gradient into: G's own
    block for chunk 0, its partial ``Pg[c - 1, top - 1 - n]`` otherwise (added by
    :func:`_add_group_partials`)."""
    if c == 0:
        gW, gb = _layer(G, n, w)
    else:
        q = Pg[c - 1, top - 1 - n]
        gW, gb = q[: w * w].reshape((w, w)), q[w * w:]
    _zero(gW)
    _zero(gb)
    return gW, gb


@njit(inline="always")
def _sweep_chunks(U, n0, n1):
    """(s, w, C, K, partials) of an adjoint sweep over layers [n0, n1): C = n_chunks(s, w)
    sample chunks, K layers a group, and the (C - 1, K, w^2 + w) chunk partials."""
    s, w = U.shape[1], U.shape[2]
    C = n_chunks(s, w)
    K = _group_layers(s, w, n1 - n0)
    return s, w, C, K, np.empty((max(C - 1, 1), K, w * w + w), U.dtype)


@njit(inline="always")
def _taken_next(n, bot, top, r0, r1):
    """(layer, first row) a sweep's thread takes after layer n of chunk rows [r0, r1)
    in the group [bot, top): the chunk one layer down, or after the group's last
    layer the next chunk at the group's top (where the prefetch runs on into)."""
    return (n - 1, r0) if n > bot else (top - 1, r1)


@njit(cache=True, parallel=True, error_model="numpy")
def _add_group_partials(G, Pg, bot, top, C):
    """G's blocks of layers bot .. top-1 += the partials of chunks 1 .. C-1, in chunk
    order (``Pg[c - 1, top - 1 - n]`` holds chunk c's partial of layer n)."""
    bs = Pg.shape[2]
    for n in prange(bot, top):
        g = G[n * bs: (n + 1) * bs]
        for c in range(1, C):
            _add_into(g, Pg[c - 1, top - 1 - n])


@njit(cache=True, parallel=True, error_model="numpy")
def adjoint_sweep(L, cur, U, P, S, h, act, D, G, n0, n1):
    """The adjoint sweep from layer n1-1 down to n0 with the gradient.

    L (2, s, w) ping-pong adjoints, ``L[cur]`` holding the adjoint of U[n1];
    G the gradient blocks (N (w^2 + w),) of the residual layers, written for
    n0 <= n < n1. Returns the index of the buffer of L holding the adjoint of
    U[n0].

    Threads take the ``C = n_chunks(s, w)`` sample chunks of the gradient sums
    through a group of layers at a time (:func:`_group_layers`; one parallel
    region a group, not a layer, and a chunk's adjoints stay in cache from layer
    to layer). Chunk 0 sums into G, chunk c > 0 into its own partials, which are
    added in chunk order after the group: the sums and their order are those of
    stepping layer by layer, so the results are bit-identical to it for any
    thread count. Workspace: ``(C - 1) K (w^2 + w)`` partials for K layers a
    group (at most ``2^19 (w + 1) / 64`` numbers).
    """
    s, w, C, K, Pg = _sweep_chunks(U, n0, n1)
    top = n1
    while top > n0:
        bot = max(n0, top - K)
        for c in prange(C):
            r0, r1 = _rows(c, C, s)
            cc = cur
            for n in range(top - 1, bot - 1, -1):
                W, _ = _layer(P, n, w)
                gW, gb = _chunk_block(G, Pg, c, n, top, w)
                nx, xr0 = _taken_next(n, bot, top, r0, r1)
                _adjoint_rows(L[cc], U[n], W, S[n], h, act, D, L[1 - cc], True, gW, gb, True,
                              True, r0, r1, False, S[nx], U[nx], xr0)
                cc = 1 - cc
        _add_group_partials(G, Pg, bot, top, C)
        if (top - bot) % 2 == 1:
            cur = 1 - cur
        top = bot
    return cur


@njit(cache=True, parallel=True, error_model="numpy")
def tangent_sweep(U, dU, P, dP, S, h, act, dZ, n0, n1):
    """dU[n+1] = dU[n] + h sigma'(S[n]) dZ[n], dZ[n] = dU[n] W_n^T + U[n] dW_n^T + db_n.

    Threads take chunks of :data:`SWEEP_ROWS` samples through all the layers;
    bit-identical to the single tangent step layer by layer.
    """
    s, w = U.shape[1], U.shape[2]
    nch = (s + SWEEP_ROWS - 1) // SWEEP_ROWS
    WT = _transposes(P, n0, n1, w)
    dWT = _transposes(dP, n0, n1, w)
    for c in prange(nch):
        r0, r1 = c * SWEEP_ROWS, min(s, (c + 1) * SWEEP_ROWS)
        for n in range(n0, n1):
            _, db = _layer(dP, n, w)
            _tangent_rows(U[n], dU[n], WT[n - n0], dWT[n - n0], db, S[n], h, act, True, True,
                          True, dZ[n], dU[n + 1], r0, r1)


@njit(cache=True, parallel=True, error_model="numpy")
def soadjoint_sweep(L, dL, cur, U, dU, P, dP, S, dZ, h, act, D, dD, H, n0, n1):
    """The second-order adjoint sweep from layer n1-1 down to n0.

    L, dL (2, s, w) ping-pong adjoints and their derivatives (``[cur]`` holding
    those of U[n1]); H receives the residual layers' Hessian-vector product
    blocks [dG_n, dgb_n]. Returns the index of the buffers holding those of U[n0].
    Threads and sums as in :func:`adjoint_sweep`: bit-identical to stepping
    layer by layer for any thread count.
    """
    s, w, C, K, Pt = _sweep_chunks(U, n0, n1)
    top = n1
    while top > n0:
        bot = max(n0, top - K)
        for c in prange(C):
            r0, r1 = _rows(c, C, s)
            cc = cur
            for n in range(top - 1, bot - 1, -1):
                W, _ = _layer(P, n, w)
                dW, _ = _layer(dP, n, w)
                hW, hb = _chunk_block(H, Pt, c, n, top, w)
                nx, xr0 = _taken_next(n, bot, top, r0, r1)
                _soadjoint_rows(L[cc], dL[cc], U[n], dU[n], W, dW, S[n], dZ[n], h, act, D, dD,
                                L[1 - cc], dL[1 - cc], hW, hb, hW, hb, True, True, False, True,
                                True, True, True, r0, r1, False, S[nx], dZ[nx], U[nx], dU[nx],
                                xr0)
                cc = 1 - cc
        _add_group_partials(H, Pt, bot, top, C)
        if (top - bot) % 2 == 1:
            cur = 1 - cur
        top = bot
    return cur


@njit(cache=True, error_model="numpy")
def adjoint_chain(L, U, P, S, h, act, D, G, want_g, Pg, Pb):
    """Adjoint steps through layers n-1 .. 0 of the stack keeping every adjoint.

    ``L`` (n+1, s, w): ``L[0]`` holds the adjoint of ``U[n]`` and ``L[k]`` receives
    that of ``U[n-k]``; ``U``, ``S`` (>= n, s, w) and ``P``, ``G`` (n (w^2 + w),)
    are the states, records, parameters and gradient blocks of those n layers
    (gradient written only with ``want_g``). Each layer is one call of the single
    adjoint step's layer code: bit-identical to stepping layer by layer.
    """
    n = L.shape[0] - 1
    w = U.shape[2]
    gd = np.empty((1, 1), U.dtype)
    bd = np.empty(1, U.dtype)
    for k in range(n):
        q = n - 1 - k
        W, _ = _layer(P, q, w)
        if want_g:
            gW, gb = _layer(G, q, w)
        else:
            gW, gb = gd, bd
        _adjoint_layer(L[k], U[q], W, S[q], h, act, D, L[k + 1], True, gW, gb, want_g, True,
                       Pg, Pb, False)


# ----------------------------------------------------------------------------
# k layers at once on stacks given as flat arrays + element offsets of each slice
# ----------------------------------------------------------------------------
@njit(inline="always")
def _sl(flat, off, q, m, n):
    o = off[q]
    return flat[o: o + m * n].reshape((m, n))


@njit(inline="always")
def _sl1(flat, off, q, n):
    o = off[q]
    return flat[o: o + n]


@njit(cache=True, parallel=True, error_model="numpy")
def forward_batch(Uf, uo, Wf, wof, bf, bo, h, act, skip, Sf, so, Of, oo, s, wi, wo):
    """Forward steps of k independent layers (slice q: U, W, b, S, out at the offsets)."""
    k = uo.size
    nch = (s + SWEEP_ROWS - 1) // SWEEP_ROWS
    WT = np.empty((k, wi, wo), Uf.dtype)
    for q in prange(k):
        _transpose(_sl(Wf, wof, q, wo, wi), WT[q])
    for t in prange(k * nch):
        q = t // nch
        c = t - q * nch
        _forward_rows(_sl(Uf, uo, q, s, wi), WT[q], _sl1(bf, bo, q, wo), h, act, skip,
                      _sl(Sf, so, q, s, wo), _sl(Of, oo, q, s, wo), c * SWEEP_ROWS,
                      min(s, (c + 1) * SWEEP_ROWS))


@njit(cache=True, parallel=True, error_model="numpy")
def adjoint_batch(Lnf, lno, Uf, uo, Wf, wof, Sf, so, h, act, Df, do, Lf, lo, want_L,
                  Gf, go, gbf, gbo, want_g, skip, s, wi, wo):
    """Adjoint steps of k independent layers; per slice bit-identical to one step."""
    k = uo.size
    C = n_chunks(s, max(wi, wo))
    kp = k if (want_g and C > 1) else 1  # partials only where there is something to add
    P = np.empty((kp, max(C - 1, 1), wo * wi + wo), Uf.dtype)
    for t in prange(k * C):
        q = t // C
        c = t - q * C
        r0, r1 = _rows(c, C, s)
        Dq = _sl(Df, do, q, s, wo)
        Lq = _sl(Lf, lo, q, s, wi) if want_L else Dq
        if c == 0 and want_g:
            G = _sl(Gf, go, q, wo, wi)
            gb = _sl1(gbf, gbo, q, wo)
        else:  # a chunk's partial (or, without gradient, an untouched stand-in)
            qp = q if kp > 1 else 0
            G = P[qp, max(c - 1, 0), : wo * wi].reshape((wo, wi))
            gb = P[qp, max(c - 1, 0), wo * wi:]
        if want_g:
            _zero(G)
            _zero(gb)
        Sq, Uq = _sl(Sf, so, q, s, wo), _sl(Uf, uo, q, s, wi)
        _adjoint_rows(_sl(Lnf, lno, q, s, wo), Uq, _sl(Wf, wof, q, wo, wi), Sq, h, act, Dq, Lq,
                      want_L, G, gb, want_g, skip, r0, r1, True, Sq, Uq, r1)
    if want_g and C > 1:
        for q in prange(k):
            G = _sl(Gf, go, q, wo, wi)
            gb = _sl1(gbf, gbo, q, wo)
            for c in range(1, C):
                _add_into(G, P[q, c - 1, : wo * wi])
                _add_into(gb, P[q, c - 1, wo * wi:])


# ----------------------------------------------------------------------------
# tables of dependent steps (MGRIT's sweeps in one call): each step reads a state
# and writes one, in up to three state arrays (X0, X1, X2, each (rows, s, w)),
# optionally adding a right-hand side row of G. Table columns: input array, input
# row, output array, output row, G row (-1: none), weights row. The steps run in
# table order, each over all samples with threads on chunks of SWEEP_ROWS rows
# (step-outer: measured 10-15 % faster than chunk-outer at s = 5000, w = 8, where
# a step's arrays stream through memory; the same bits either way, since every row
# depends on its own rows only).
# ----------------------------------------------------------------------------
@njit(inline="always")
def _pick(k, X0, X1, X2):
    if k == 0:
        return X0
    if k == 1:
        return X1
    return X2


@njit(inline="always")
def _add_rows(o, g, r0, r1):
    for i in range(r0, r1):
        for j in range(o.shape[1]):
            o[i, j] += g[i, j]


@njit(cache=True, parallel=True, error_model="numpy")
def forward_steps(X0, X1, X2, tab, W, b, h, act, S, G):
    """Forward steps of a table: out = in + h sigma(in W_q^T + b_q) (+ G row), S a
    (s, w) record scratch. Per step bit-identical to the single forward step followed
    by the addition of the G row."""
    s, w = S.shape
    nch = (s + SWEEP_ROWS - 1) // SWEEP_ROWS
    WT = np.empty((w, w), S.dtype)
    for j in range(tab.shape[0]):
        q = tab[j, 5]
        _transpose(W[q], WT)
        u = _pick(tab[j, 0], X0, X1, X2)[tab[j, 1]]
        out = _pick(tab[j, 2], X0, X1, X2)[tab[j, 3]]
        g = tab[j, 4]
        if nch == 1:  # no parallel region (its launch costs about a microsecond)
            _forward_rows(u, WT, b[q], h, act, True, S, out, 0, s)
            if g >= 0:
                _add_rows(out, G[g], 0, s)
            continue
        for c in prange(nch):
            r0, r1 = c * SWEEP_ROWS, min(s, (c + 1) * SWEEP_ROWS)
            _forward_rows(u, WT, b[q], h, act, True, S, out, r0, r1)
            if g >= 0:
                _add_rows(out, G[g], r0, r1)


@njit(cache=True, parallel=True, error_model="numpy")
def adjoint_steps(X0, X1, X2, tab, U, urow, W, R, rrow, h, act, D, G):
    """Adjoint steps of a table (no parameter gradient): out = in + D W_q with
    D = h sigma'(R[rrow]) in, linearised at the states U[urow] (+ G row). Per step
    bit-identical to the single adjoint step followed by the addition of the G row."""
    s, w = D.shape
    nch = (s + SWEEP_ROWS - 1) // SWEEP_ROWS
    gd = np.empty((1, 1), D.dtype)
    bd = np.empty(1, D.dtype)
    for j in range(tab.shape[0]):
        ln = _pick(tab[j, 0], X0, X1, X2)[tab[j, 1]]
        out = _pick(tab[j, 2], X0, X1, X2)[tab[j, 3]]
        u, Wq, r = U[urow[j]], W[tab[j, 5]], R[rrow[j]]
        g = tab[j, 4]
        if nch == 1:
            _adjoint_rows(ln, u, Wq, r, h, act, D, out, True, gd, bd, False, True, 0, s, True,
                          r, u, s)
            if g >= 0:
                _add_rows(out, G[g], 0, s)
            continue
        for c in prange(nch):
            r0, r1 = c * SWEEP_ROWS, min(s, (c + 1) * SWEEP_ROWS)
            _adjoint_rows(ln, u, Wq, r, h, act, D, out, True, gd, bd, False, True, r0, r1, True,
                          r, u, r1)
            if g >= 0:
                _add_rows(out, G[g], r0, r1)


@njit(cache=True, parallel=True, error_model="numpy")
def forward_records(U, urow, W, b, wrow, one, act, R, tmp):
    """R[j] = the record of the forward step of U[urow[j]] with W[wrow[j]], b[wrow[j]]
    (``one``: the step size 1 in the arrays' dtype; tmp (s, w): the discarded states);
    per j bit-identical to the single step's."""
    s, w = tmp.shape
    nch = (s + SWEEP_ROWS - 1) // SWEEP_ROWS
    WT = np.empty((w, w), tmp.dtype)
    for j in range(urow.size):
        q = wrow[j]
        _transpose(W[q], WT)
        u, rj = U[urow[j]], R[j]
        if nch == 1:
            _forward_rows(u, WT, b[q], one, act, True, rj, tmp, 0, s)
            continue
        for c in prange(nch):
            r0, r1 = c * SWEEP_ROWS, min(s, (c + 1) * SWEEP_ROWS)
            _forward_rows(u, WT, b[q], one, act, True, rj, tmp, r0, r1)


@njit(cache=True, parallel=True, error_model="numpy")
def forward_steps_layers(X0, X1, X2, tab, P, h, act, S):
    """Forward steps of a table through the layers of flat blocks ``P`` (columns:
    input array, input row, output array, output row, record row of S, layer of P):
    out = in + h sigma(in W_n^T + b_n), S[record row] = the record. Per step
    bit-identical to the single forward step."""
    s, w = S.shape[1], S.shape[2]
    nch = (s + SWEEP_ROWS - 1) // SWEEP_ROWS
    WT = np.empty((w, w), S.dtype)
    for j in range(tab.shape[0]):
        W, b = _layer(P, tab[j, 5], w)
        _transpose(W, WT)
        u = _pick(tab[j, 0], X0, X1, X2)[tab[j, 1]]
        out = _pick(tab[j, 2], X0, X1, X2)[tab[j, 3]]
        rec = S[tab[j, 4]]
        if nch == 1:
            _forward_rows(u, WT, b, h, act, True, rec, out, 0, s)
            continue
        for c in prange(nch):
            r0, r1 = c * SWEEP_ROWS, min(s, (c + 1) * SWEEP_ROWS)
            _forward_rows(u, WT, b, h, act, True, rec, out, r0, r1)


@njit(cache=True, error_model="numpy")
def adjoint_steps_layers(X0, X1, X2, tab, U, P, S, h, act, D, G, want_g, Pg, Pb):
    """Adjoint steps of a table through the layers of flat blocks ``P`` (columns:
    input array, input row, output array, output row, row of U, S and G, layer of P):
    out = in + D W_n with D = h sigma'(S[row]) in, and with ``want_g`` the layer's
    gradient block G[row] = [D^T U[row], colsum D]. Each step is one call of the single
    adjoint step's layer code: bit-identical to it, for any thread count."""
    w = S.shape[2]
    gd = np.empty((1, 1), S.dtype)
    bd = np.empty(1, S.dtype)
    for j in range(tab.shape[0]):
        W, _ = _layer(P, tab[j, 5], w)
        r = tab[j, 4]
        if want_g:
            gW = G[r, : w * w].reshape((w, w))
            gb = G[r, w * w:]
        else:
            gW, gb = gd, bd
        _adjoint_layer(_pick(tab[j, 0], X0, X1, X2)[tab[j, 1]], U[r], W, S[r], h, act, D,
                       _pick(tab[j, 2], X0, X1, X2)[tab[j, 3]], True, gW, gb, want_g, True,
                       Pg, Pb, False)


forward_layer = _forward_layer
adjoint_layer = _adjoint_layer
tangent_layer = _tangent_layer
soadjoint_layer = _soadjoint_layer
forward_sweep_k = forward_sweep
adjoint_sweep_k = adjoint_sweep
adjoint_chain_k = adjoint_chain
tangent_sweep_k = tangent_sweep
soadjoint_sweep_k = soadjoint_sweep
forward_batch_k = forward_batch
adjoint_batch_k = adjoint_batch
forward_steps_k = forward_steps
adjoint_steps_k = adjoint_steps
forward_records_k = forward_records
forward_steps_layers_k = forward_steps_layers
adjoint_steps_layers_k = adjoint_steps_layers
