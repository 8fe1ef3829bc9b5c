"""CUDA C sources of the fused elementwise kernels of :mod:`mgnn.kernels.gpu`.

Kept apart from the CuPy module so that the sources can be inspected and
compiled (``tests/test_gpu_source.py`` runs ``nvcc`` on them) without CuPy or a
GPU. Each entry of :data:`KERNELS` is ``(in_params, out_params, body)`` in the
form of ``cupy.ElementwiseKernel``: array parameters are element references
inside ``body`` (any shape: the same kernels serve one layer and a stack of
layers, whose bias broadcasts as (k, 1, w)); :data:`SCALARS` names the parameters passed as scalars.
"""

from mgnn.kernels.cpu import RELU, SMOOTH_RELU, SMOOTH_RELU_EPS, TANH

PREAMBLE = r"""
#define MG_EPS %(eps)r
template <typename T> __device__ T mg_sigma(T z, int act) {
    if (act == %(relu)d) return (z > T(0) || z != z) ? z : T(0);  /* NaN propagates */
    if (act == %(srelu)d) {
        if (z <= T(-MG_EPS)) return T(0);
        if (z >= T(MG_EPS)) return z;
        return (z + T(MG_EPS)) * (z + T(MG_EPS)) * T(0.25 / MG_EPS);
    }
    if (act == %(tanh)d) return tanh(z);
    return z;
}
template <typename T> __device__ T mg_dsigma(T r, int act) {
    if (act == %(relu)d) return r > T(0) ? T(1) : T(0);
    if (act == %(srelu)d) {
        if (r <= T(-MG_EPS)) return T(0);
        if (r >= T(MG_EPS)) return T(1);
        return (r + T(MG_EPS)) * T(0.5 / MG_EPS);
    }
    if (act == %(tanh)d) return T(1) - r * r;
    return T(1);
}
template <typename T> __device__ T mg_d2sigma(T r, int act) {
    if (act == %(srelu)d) {
        if (r <= T(-MG_EPS) || r >= T(MG_EPS)) return T(0);
        return T(0.5 / MG_EPS);
    }
    if (act == %(tanh)d) return T(-2) * r * (T(1) - r * r);
    return T(0);
}
""" % {"eps": SMOOTH_RELU_EPS, "relu": RELU, "srelu": SMOOTH_RELU, "tanh": TANH}

#: Parameters passed as scalars (all others are arrays, broadcast elementwise).
SCALARS = {"h", "act", "skip", "want_T", "which"}

KERNELS = {
    # S holds U W^T on entry and the record on exit (tanh(Z) for tanh, else Z)
    "forward": (
        "T U, T b, T h, int32 act, bool skip", "T S, T out",
        "T z = S + b; T a = mg_sigma<T>(z, act); S = (act == %d) ? a : z;"
        " out = skip ? U + h * a : h * a;" % TANH),
    "delta": ("T S, T L, T h, int32 act", "T D", "D = h * mg_dsigma<T>(S, act) * L;"),
    "tangent": (
        "T Tm, T db, T S, T dU, T h, int32 act, bool skip, bool want_T", "T dZ, T out",
        "T z = dZ + db; if (want_T) z += Tm; dZ = z;"
        " T v = h * mg_dsigma<T>(S, act) * z; out = skip ? dU + v : v;"),
    "soadjoint": (
        "T S, T dZ, T L, T dL, T h, int32 act", "T D, T dD",
        "T d1 = mg_dsigma<T>(S, act); D = h * d1 * L;"
        " dD = h * (mg_d2sigma<T>(S, act) * dZ * L + d1 * dL);"),
    "activation": (
        "T Z, int32 act, int32 which", "T out",
        "T r = (act == %d) ? tanh(Z) : Z;"
        " out = which == 0 ? mg_sigma<T>(Z, act) : (which == 1 ? mg_dsigma<T>(r, act)"
        " : mg_d2sigma<T>(r, act));" % TANH),
}



# =============================================================================
# Fused narrow-layer kernels (raw CUDA, compiled by NVRTC through cupy.RawModule)
# =============================================================================
#
# For layers of width <= FUSED_MAX_WIDTH a layer's weights fit in shared memory, so
# one launch does the GEMM, the bias, the activation, the record and the skip (or,
# backwards, the delta and the adjoint GEMM), instead of a cuBLAS call and an
# elementwise kernel that go through memory twice. A ResNet sweep is row-independent
# (row r of U_{n+1} depends on row r of U_n only), so the *sweep* kernels carry a tile
# of rows through every layer in one launch: the state tile stays in shared memory and
# each layer's weights are read from L2. A whole forward, adjoint, tangent or
# second-order sweep is one launch, however deep the network.
#
# Conventions of every kernel:
# - blocks of MG_NT = 256 threads; a block owns ROWS = NG * RPT rows, NG = MG_NT / the
#   wider of the layer's two widths; a thread owns the elements (rg + m * NG, j),
#   m < RPT, of its column j and row group rg; RPT (rows per thread) is chosen by
#   :func:`plan` from the batch size (enough blocks to fill the device).
# - a state is a C-contiguous (s, width) block; a *stack* of k layers has an
#   arbitrary layer stride in elements (negative for descending views), passed as a
#   ``long long``: blockIdx.y selects the layer.
# - arithmetic per element follows the CPU kernels (dot product, then bias; delta =
#   h * sigma'(record) * L); sums run in another order, so results agree with the CPU
#   to rounding, not bit for bit.
# - the tiles are padded by one element per row (odd row stride: no bank conflicts).

#: Threads per block of the raw kernels.
NT = 256

RAW_PREAMBLE = r"""
#ifndef MG_EMULATION
#define MG_DECLARE_SMEM extern __shared__ __align__(16) unsigned char mg_smem[];
#endif
#define MG_NT 256
#define MG_TANH %(tanh)d
""" % {"tanh": TANH}

RAW_SOURCE = r"""
// ---------------------------------------------------------------- one layer (stack)
// out = skip*U + h*sigma(U W^T + b), S = record; U (s, WI), W (WO, WI), S/out (s, WO)
template <typename T, int WI, int WO, int RPT>
__global__ void __launch_bounds__(MG_NT) mgnn_fwd_step(
    const T* __restrict__ U, long long su, const T* __restrict__ W, long long sw,
    const T* __restrict__ b, long long sb, T* __restrict__ S, long long ss,
    T* __restrict__ out, long long so, int s, T h, int act, int skip)
{
    constexpr int WM = WI > WO ? WI : WO, NG = MG_NT / WM, ROWS = NG * RPT, WIP = WI + 1;
    MG_DECLARE_SMEM
    T* Wt = reinterpret_cast<T*>(mg_smem);      // Wt[i * WO + j] = W[j, i]
    T* bs = Wt + WI * WO;
    T* Us = bs + WO;                             // Us[r * WIP + i]
    const int t = threadIdx.x;
    const long long q = blockIdx.y;
    const T* Uq = U + q * su; const T* Wq = W + q * sw; const T* bq = b + q * sb;
    T* Sq = S + q * ss; T* oq = out + q * so;
    const int row0 = blockIdx.x * ROWS;
    for (int e = t; e < WI * WO; e += MG_NT) {
        int j = e / WI, i = e - j * WI;
        Wt[i * WO + j] = Wq[e];
    }
    for (int e = t; e < WO; e += MG_NT) bs[e] = bq[e];
    for (int e = t; e < ROWS * WI; e += MG_NT) {
        int r = e / WI, i = e - r * WI;
        Us[r * WIP + i] = (row0 + r < s) ? Uq[(long long)row0 * WI + e] : T(0);
    }
    __syncthreads();
    if (t < NG * WO) {
        const int j = t % WO, rg = t / WO;
        T acc[RPT];
#pragma unroll
        for (int m = 0; m < RPT; ++m) acc[m] = T(0);
#pragma unroll 8
        for (int i = 0; i < WI; ++i) {
            const T wv = Wt[i * WO + j];
#pragma unroll
            for (int m = 0; m < RPT; ++m) acc[m] += Us[(rg + m * NG) * WIP + i] * wv;
        }
#pragma unroll
        for (int m = 0; m < RPT; ++m) {
            const int lr = rg + m * NG, r = row0 + lr;
            if (r < s) {
                const T z = acc[m] + bs[j];
                const T a = mg_sigma<T>(z, act);
                const long long o = (long long)r * WO + j;
                Sq[o] = (act == MG_TANH) ? a : z;
                oq[o] = (skip && WI == WO) ? Us[lr * WIP + (j < WI ? j : 0)] + h * a : h * a;
            }
        }
    }
}

// D = h*sigma'(S)*Ln (s, WO); L = skip*Ln + D W (s, WI) when want_L
template <typename T, int WI, int WO, int RPT>
__global__ void __launch_bounds__(MG_NT) mgnn_adj_step(
    const T* __restrict__ Ln, long long sln, const T* __restrict__ S, long long ss,
    const T* __restrict__ W, long long sw, T* __restrict__ D, long long sd,
    T* __restrict__ L, long long sl, int s, T h, int act, int skip, int want_L)
{
    constexpr int WM = WI > WO ? WI : WO, NG = MG_NT / WM, ROWS = NG * RPT, WOP = WO + 1;
    MG_DECLARE_SMEM
    T* Ws = reinterpret_cast<T*>(mg_smem);      // Ws[j * WI + i] = W[j, i]
    T* Ds = Ws + WI * WO;                        // Ds[r * WOP + j]
    const int t = threadIdx.x;
    const long long q = blockIdx.y;
    const T* Lnq = Ln + q * sln; const T* Sq = S + q * ss; const T* Wq = W + q * sw;
    T* Dq = D + q * sd; T* Lq = L + q * sl;
    const int row0 = blockIdx.x * ROWS;
    for (int e = t; e < WI * WO; e += MG_NT) Ws[e] = Wq[e];
    for (int e = t; e < ROWS * WO; e += MG_NT) {
        int r = e / WO, j = e - r * WO;
        T d = T(0);
        if (row0 + r < s) {
            const long long o = (long long)row0 * WO + e;
            d = h * mg_dsigma<T>(Sq[o], act) * Lnq[o];
            Dq[o] = d;
        }
        Ds[r * WOP + j] = d;
    }
    __syncthreads();
    if (want_L && t < NG * WI) {
        const int i = t % WI, rg = t / WI;
        T acc[RPT];
#pragma unroll
        for (int m = 0; m < RPT; ++m) acc[m] = T(0);
#pragma unroll 8
        for (int j = 0; j < WO; ++j) {
            const T wv = Ws[j * WI + i];
#pragma unroll
            for (int m = 0; m < RPT; ++m) acc[m] += Ds[(rg + m * NG) * WOP + j] * wv;
        }
#pragma unroll
        for (int m = 0; m < RPT; ++m) {
            const int r = row0 + rg + m * NG;
            if (r < s) {
                const long long o = (long long)r * WI + i;
                Lq[o] = (skip && WI == WO) ? acc[m] + Lnq[(long long)r * WO + (i < WO ? i : 0)]
                                           : acc[m];
            }
        }
    }
}

// ----------------------------------------------------------------- whole sweeps
// P: the residual blocks [W_n (W x W), b_n (W)] of layers 0..N-1, layer stride W*W+W.
// Forward: U (N+1, s, W) and S (N, s, W), layers n0..n1-1.
template <typename T, int W, int RPT>
__global__ void __launch_bounds__(MG_NT) mgnn_fwd_sweep(
    T* __restrict__ U, const T* __restrict__ P, T* __restrict__ S, int n0, int n1, int s,
    T h, int act)
{
    constexpr int NG = MG_NT / W, ROWS = NG * RPT, WP = W + 1, BS = W * W + W;
    MG_DECLARE_SMEM
    T* Wt = reinterpret_cast<T*>(mg_smem);      // W_n transposed
    T* bs = Wt + W * W;
    T* Us = bs + W;                              // the state tile
    const int t = threadIdx.x, row0 = blockIdx.x * ROWS;
    const long long plane = (long long)s * W;
    const bool own = t < NG * W;
    const int j = t % W, rg = t / W;
    for (int e = t; e < ROWS * W; e += MG_NT) {
        int r = e / W, i = e - r * W;
        Us[r * WP + i] = (row0 + r < s) ? U[n0 * plane + (long long)row0 * W + e] : T(0);
    }
    for (int n = n0; n < n1; ++n) {
        const T* Pn = P + (long long)n * BS;
        for (int e = t; e < W * W; e += MG_NT) {
            int jj = e / W, i = e - jj * W;
            Wt[i * W + jj] = Pn[e];
        }
        for (int e = t; e < W; e += MG_NT) bs[e] = Pn[W * W + e];
        __syncthreads();                         // weights loaded, state tile complete
        T z[RPT];
        if (own) {
#pragma unroll
            for (int m = 0; m < RPT; ++m) z[m] = T(0);
#pragma unroll 8
            for (int i = 0; i < W; ++i) {
                const T wv = Wt[i * W + j];
#pragma unroll
                for (int m = 0; m < RPT; ++m) z[m] += Us[(rg + m * NG) * WP + i] * wv;
            }
#pragma unroll
            for (int m = 0; m < RPT; ++m) z[m] += bs[j];
        }
        __syncthreads();                         // every read of Us, Wt, bs is done
        if (own) {
#pragma unroll
            for (int m = 0; m < RPT; ++m) {
                const int lr = rg + m * NG, r = row0 + lr;
                const T a = mg_sigma<T>(z[m], act);
                const T u = Us[lr * WP + j] + h * a;
                Us[lr * WP + j] = u;
                if (r < s) {
                    const long long o = (long long)r * W + j;
                    S[n * plane + o] = (act == MG_TANH) ? a : z[m];
                    U[(n + 1) * plane + o] = u;
                }
            }
        }
    }
}

// Adjoint: L_n = L_{n+1} + D_n W_n, D_n = h sigma'(S_n) L_{n+1}, layers n1-1 down to n0.
// Lin: L_{n1}; Lout: L_{n0} (may be Lin: each block reads its rows first, writes last);
// Dall (N, s, W) receives every D_n (for the weight gradients, by batched GEMMs).
template <typename T, int W, int RPT>
__global__ void __launch_bounds__(MG_NT) mgnn_adj_sweep(
    const T* Lin, T* Lout, const T* __restrict__ P, const T* __restrict__ S,
    T* __restrict__ Dall, int n0, int n1, int s, T h, int act)
{
    constexpr int NG = MG_NT / W, ROWS = NG * RPT, WP = W + 1, BS = W * W + W;
    MG_DECLARE_SMEM
    T* Ws = reinterpret_cast<T*>(mg_smem);      // W_n as is: Ws[j * W + i]
    T* Ls = Ws + W * W;
    T* Ds = Ls + ROWS * WP;
    const int t = threadIdx.x, row0 = blockIdx.x * ROWS;
    const long long plane = (long long)s * W;
    const bool own = t < NG * W;
    const int c = t % W, rg = t / W;            // c: the column a thread owns
    if (own) {
#pragma unroll
        for (int m = 0; m < RPT; ++m) {
            const int lr = rg + m * NG, r = row0 + lr;
            Ls[lr * WP + c] = (r < s) ? Lin[(long long)r * W + c] : T(0);
        }
    }
    for (int n = n1 - 1; n >= n0; --n) {
        const T* Pn = P + (long long)n * BS;
        for (int e = t; e < W * W; e += MG_NT) Ws[e] = Pn[e];
        if (own) {
#pragma unroll
            for (int m = 0; m < RPT; ++m) {
                const int lr = rg + m * NG, r = row0 + lr;
                T d = T(0);
                if (r < s) {
                    const long long o = n * plane + (long long)r * W + c;
                    d = h * mg_dsigma<T>(S[o], act) * Ls[lr * WP + c];
                    Dall[o] = d;
                }
                Ds[lr * WP + c] = d;
            }
        }
        __syncthreads();                         // weights and the delta tile are complete
        T acc[RPT];
        if (own) {
#pragma unroll
            for (int m = 0; m < RPT; ++m) acc[m] = T(0);
#pragma unroll 8
            for (int jj = 0; jj < W; ++jj) {
                const T wv = Ws[jj * W + c];
#pragma unroll
                for (int m = 0; m < RPT; ++m) acc[m] += Ds[(rg + m * NG) * WP + jj] * wv;
            }
        }
        __syncthreads();                         // every read of Ws and Ds is done
        if (own) {
#pragma unroll
            for (int m = 0; m < RPT; ++m) Ls[(rg + m * NG) * WP + c] += acc[m];
        }
    }
    if (own) {
#pragma unroll
        for (int m = 0; m < RPT; ++m) {
            const int lr = rg + m * NG, r = row0 + lr;
            if (r < s) Lout[(long long)r * W + c] = Ls[lr * WP + c];
        }
    }
}

// Tangent: dZ_n = dU_n W_n^T + U_n dW_n^T + db_n, dU_{n+1} = dU_n + h sigma'(S_n) dZ_n.
template <typename T, int W, int RPT>
__global__ void __launch_bounds__(MG_NT) mgnn_tan_sweep(
    const T* __restrict__ U, T* __restrict__ dU, const T* __restrict__ P,
    const T* __restrict__ dP, const T* __restrict__ S, T* __restrict__ dZ, int n0, int n1,
    int s, T h, int act)
{
    constexpr int NG = MG_NT / W, ROWS = NG * RPT, WP = W + 1, BS = W * W + W;
    MG_DECLARE_SMEM
    T* Wt = reinterpret_cast<T*>(mg_smem);      // W_n^T, then dW_n^T
    T* bs = Wt + W * W;                          // db_n
    T* dUs = bs + W;                             // the tangent state tile
    T* Us = dUs + ROWS * WP;                     // the state tile of layer n
    const int t = threadIdx.x, row0 = blockIdx.x * ROWS;
    const long long plane = (long long)s * W;
    const bool own = t < NG * W;
    const int j = t % W, rg = t / W;
    for (int e = t; e < ROWS * W; e += MG_NT) {
        int r = e / W, i = e - r * W;
        dUs[r * WP + i] = (row0 + r < s) ? dU[n0 * plane + (long long)row0 * W + e] : T(0);
    }
    for (int n = n0; n < n1; ++n) {
        const T* Pn = P + (long long)n * BS;
        const T* dPn = dP + (long long)n * BS;
        for (int e = t; e < W * W; e += MG_NT) {
            int jj = e / W, i = e - jj * W;
            Wt[i * W + jj] = Pn[e];
        }
        for (int e = t; e < W; e += MG_NT) bs[e] = dPn[W * W + e];
        for (int e = t; e < ROWS * W; e += MG_NT) {
            int r = e / W, i = e - r * W;
            Us[r * WP + i] = (row0 + r < s) ? U[n * plane + (long long)row0 * W + e] : T(0);
        }
        __syncthreads();
        T z[RPT];
        if (own) {
#pragma unroll
            for (int m = 0; m < RPT; ++m) z[m] = T(0);
#pragma unroll 8
            for (int i = 0; i < W; ++i) {
                const T wv = Wt[i * W + j];
#pragma unroll
                for (int m = 0; m < RPT; ++m) z[m] += dUs[(rg + m * NG) * WP + i] * wv;
            }
        }
        __syncthreads();                         // W_n^T no longer read
        for (int e = t; e < W * W; e += MG_NT) {
            int jj = e / W, i = e - jj * W;
            Wt[i * W + jj] = dPn[e];
        }
        __syncthreads();
        if (own) {
            T y[RPT];
#pragma unroll
            for (int m = 0; m < RPT; ++m) y[m] = T(0);
#pragma unroll 8
            for (int i = 0; i < W; ++i) {
                const T wv = Wt[i * W + j];
#pragma unroll
                for (int m = 0; m < RPT; ++m) y[m] += Us[(rg + m * NG) * WP + i] * wv;
            }
#pragma unroll
            for (int m = 0; m < RPT; ++m) z[m] = z[m] + bs[j] + y[m];
        }
        __syncthreads();                         // every read of the tiles is done
        if (own) {
#pragma unroll
            for (int m = 0; m < RPT; ++m) {
                const int lr = rg + m * NG, r = row0 + lr;
                T v = dUs[lr * WP + j];
                if (r < s) {
                    const long long o = n * plane + (long long)r * W + j;
                    dZ[o] = z[m];
                    v += h * mg_dsigma<T>(S[o], act) * z[m];
                    dU[(n + 1) * plane + (long long)r * W + j] = v;
                }
                dUs[lr * WP + j] = v;
            }
        }
    }
}

// Second-order adjoint, layers n1-1 down to n0:
//   D  = h sigma'(S) L,  dD = h (sigma''(S) dZ L + sigma'(S) dL),
//   L <- L + D W,        dL <- dL + dD W + D dW;
// Dall, dDall (N, s, W) receive D_n and dD_n (the Hessian-vector product's weight
// parts are batched GEMMs afterwards).
template <typename T, int W, int RPT>
__global__ void __launch_bounds__(MG_NT) mgnn_soadj_sweep(
    const T* Lin, const T* dLin, T* Lout, T* dLout, const T* __restrict__ P,
    const T* __restrict__ dP, const T* __restrict__ S, const T* __restrict__ dZ,
    T* __restrict__ Dall, T* __restrict__ dDall, int n0, int n1, int s, T h, int act)
{
    constexpr int NG = MG_NT / W, ROWS = NG * RPT, WP = W + 1, BS = W * W + W;
    MG_DECLARE_SMEM
    T* Ws = reinterpret_cast<T*>(mg_smem);      // W_n, then dW_n (as is)
    T* Ls = Ws + W * W;
    T* dLs = Ls + ROWS * WP;
    T* Ds = dLs + ROWS * WP;
    T* dDs = Ds + ROWS * WP;
    const int t = threadIdx.x, row0 = blockIdx.x * ROWS;
    const long long plane = (long long)s * W;
    const bool own = t < NG * W;
    const int c = t % W, rg = t / W;
    if (own) {
#pragma unroll
        for (int m = 0; m < RPT; ++m) {
            const int lr = rg + m * NG, r = row0 + lr;
            Ls[lr * WP + c] = (r < s) ? Lin[(long long)r * W + c] : T(0);
            dLs[lr * WP + c] = (r < s) ? dLin[(long long)r * W + c] : T(0);
        }
    }
    for (int n = n1 - 1; n >= n0; --n) {
        const T* Pn = P + (long long)n * BS;
        const T* dPn = dP + (long long)n * BS;
        for (int e = t; e < W * W; e += MG_NT) Ws[e] = Pn[e];
        if (own) {
#pragma unroll
            for (int m = 0; m < RPT; ++m) {
                const int lr = rg + m * NG, r = row0 + lr;
                T d = T(0), dd = T(0);
                if (r < s) {
                    const long long o = n * plane + (long long)r * W + c;
                    const T rec = S[o], l = Ls[lr * WP + c];
                    const T d1 = mg_dsigma<T>(rec, act);
                    d = h * d1 * l;
                    dd = h * (mg_d2sigma<T>(rec, act) * dZ[o] * l + d1 * dLs[lr * WP + c]);
                    Dall[o] = d;
                    dDall[o] = dd;
                }
                Ds[lr * WP + c] = d;
                dDs[lr * WP + c] = dd;
            }
        }
        __syncthreads();
        T a[RPT], da[RPT];
        if (own) {
#pragma unroll
            for (int m = 0; m < RPT; ++m) { a[m] = T(0); da[m] = T(0); }
#pragma unroll 4
            for (int jj = 0; jj < W; ++jj) {
                const T wv = Ws[jj * W + c];
#pragma unroll
                for (int m = 0; m < RPT; ++m) {
                    a[m] += Ds[(rg + m * NG) * WP + jj] * wv;
                    da[m] += dDs[(rg + m * NG) * WP + jj] * wv;
                }
            }
        }
        __syncthreads();                         // W_n no longer read
        for (int e = t; e < W * W; e += MG_NT) Ws[e] = dPn[e];
        __syncthreads();
        if (own) {
            T e2[RPT];
#pragma unroll
            for (int m = 0; m < RPT; ++m) e2[m] = T(0);
#pragma unroll 8
            for (int jj = 0; jj < W; ++jj) {
                const T wv = Ws[jj * W + c];
#pragma unroll
                for (int m = 0; m < RPT; ++m) e2[m] += Ds[(rg + m * NG) * WP + jj] * wv;
            }
#pragma unroll
            for (int m = 0; m < RPT; ++m) da[m] += e2[m];
        }
        __syncthreads();                         // every read of Ws, Ds, dDs is done
        if (own) {
#pragma unroll
            for (int m = 0; m < RPT; ++m) {
                const int lr = rg + m * NG;
                Ls[lr * WP + c] += a[m];
                dLs[lr * WP + c] += da[m];
            }
        }
    }
    if (own) {
#pragma unroll
        for (int m = 0; m < RPT; ++m) {
            const int lr = rg + m * NG, r = row0 + lr;
            if (r < s) {
                Lout[(long long)r * W + c] = Ls[lr * WP + c];
                dLout[(long long)r * W + c] = dLs[lr * WP + c];
            }
        }
    }
}

// ------------------------------------------------------- column sums (bias gradients)
// out[q, j] = sum_r A[q, r, j] for a stack of k (s, w) blocks, deterministically:
// phase 1 sums chunks of rows (blockIdx.x = chunk, blockIdx.y = q) into part
// (k, nchunks, w); phase 2 sums the chunks in order.
template <typename T>
__global__ void __launch_bounds__(MG_NT) mgnn_colsum_part(
    const T* __restrict__ A, long long sa, int s, int w, int chunk, T* __restrict__ part,
    int nchunks)
{
    __shared__ T red[8][33];
    const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
    const long long q = blockIdx.y;
    const T* Aq = A + q * sa;
    const int r0 = blockIdx.x * chunk;
    const int r1 = (r0 + chunk < s) ? r0 + chunk : s;
    for (int jb = 0; jb < w; jb += 32) {
        const int j = jb + tx;
        T acc = T(0);
        if (j < w)
            for (int r = r0 + ty; r < r1; r += 8) acc += Aq[(long long)r * w + j];
        red[ty][tx] = acc;
        __syncthreads();
        if (ty == 0 && j < w) {
            T tot = red[0][tx];
            for (int k = 1; k < 8; ++k) tot += red[k][tx];
            part[(q * nchunks + blockIdx.x) * w + j] = tot;
        }
        __syncthreads();
    }
}

template <typename T>
__global__ void __launch_bounds__(MG_NT) mgnn_colsum_final(
    const T* __restrict__ part, int nchunks, int w, T* __restrict__ out, long long so)
{
    const int j = blockIdx.x * MG_NT + threadIdx.x;
    const long long q = blockIdx.y;
    if (j >= w) return;
    T tot = T(0);
    for (int c = 0; c < nchunks; ++c) tot += part[(q * nchunks + c) * w + j];
    out[q * so + j] = tot;
}

// ------------------------------------------------------- softmax cross-entropy rows
// per row: loss_r = log sum_j exp(Y_rj) - Y_r,c (stable); with want_grad
// G_rj = (softmax_rj - [j == c]) / s
template <typename T>
__global__ void __launch_bounds__(MG_NT) mgnn_xent_rows(
    const T* __restrict__ Y, const long long* __restrict__ labels, int s, int m,
    T* __restrict__ G, T* __restrict__ loss, int want_grad)
{
    const int r = blockIdx.x * MG_NT + threadIdx.x;
    if (r >= s) return;
    const T* y = Y + (long long)r * m;
    T mx = y[0];
    for (int j = 1; j < m; ++j) mx = y[j] > mx ? y[j] : mx;
    T tot = T(0);
    for (int j = 0; j < m; ++j) tot += exp(y[j] - mx);
    const long long c = labels[r];
    loss[r] = mx + log(tot) - y[c];
    if (want_grad) {
        T* g = G + (long long)r * m;
        const T inv = T(1) / (tot * T(s));
        for (int j = 0; j < m; ++j) g[j] = exp(y[j] - mx) * inv - (j == c ? T(1) / T(s) : T(0));
    }
}
"""

#: The raw kernels: name -> (template parameters, parameters as (C type, name)). The
#: GPU module passes arguments in this order; the emulation test generates its
#: launchers from the same table.
_STRIDE = "long long"
RAW_KERNELS = {
    "mgnn_fwd_step": (("T", "WI", "WO", "RPT"), (
        ("const T*", "U"), (_STRIDE, "su"), ("const T*", "W"), (_STRIDE, "sw"),
        ("const T*", "b"), (_STRIDE, "sb"), ("T*", "S"), (_STRIDE, "ss"), ("T*", "out"),
        (_STRIDE, "so"), ("int", "s"), ("T", "h"), ("int", "act"), ("int", "skip"))),
    "mgnn_adj_step": (("T", "WI", "WO", "RPT"), (
        ("const T*", "Ln"), (_STRIDE, "sln"), ("const T*", "S"), (_STRIDE, "ss"),
        ("const T*", "W"), (_STRIDE, "sw"), ("T*", "D"), (_STRIDE, "sd"), ("T*", "L"),
        (_STRIDE, "sl"), ("int", "s"), ("T", "h"), ("int", "act"), ("int", "skip"),
        ("int", "want_L"))),
    "mgnn_fwd_sweep": (("T", "W", "RPT"), (
        ("T*", "U"), ("const T*", "P"), ("T*", "S"), ("int", "n0"), ("int", "n1"),
        ("int", "s"), ("T", "h"), ("int", "act"))),
    "mgnn_adj_sweep": (("T", "W", "RPT"), (
        ("const T*", "Lin"), ("T*", "Lout"), ("const T*", "P"), ("const T*", "S"),
        ("T*", "Dall"), ("int", "n0"), ("int", "n1"), ("int", "s"), ("T", "h"),
        ("int", "act"))),
    "mgnn_tan_sweep": (("T", "W", "RPT"), (
        ("const T*", "U"), ("T*", "dU"), ("const T*", "P"), ("const T*", "dP"),
        ("const T*", "S"), ("T*", "dZ"), ("int", "n0"), ("int", "n1"), ("int", "s"),
        ("T", "h"), ("int", "act"))),
    "mgnn_soadj_sweep": (("T", "W", "RPT"), (
        ("const T*", "Lin"), ("const T*", "dLin"), ("T*", "Lout"), ("T*", "dLout"),
        ("const T*", "P"), ("const T*", "dP"), ("const T*", "S"), ("const T*", "dZ"),
        ("T*", "Dall"), ("T*", "dDall"), ("int", "n0"), ("int", "n1"), ("int", "s"),
        ("T", "h"), ("int", "act"))),
    "mgnn_colsum_part": (("T",), (
        ("const T*", "A"), (_STRIDE, "sa"), ("int", "s"), ("int", "w"), ("int", "chunk"),
        ("T*", "part"), ("int", "nchunks"))),
    "mgnn_colsum_final": (("T",), (
        ("const T*", "part"), ("int", "nchunks"), ("int", "w"), ("T*", "out"),
        (_STRIDE, "so"))),
    "mgnn_xent_rows": (("T",), (
        ("const T*", "Y"), ("const long long*", "labels"), ("int", "s"), ("int", "m"),
        ("T*", "G"), ("T*", "loss"), ("int", "want_grad"))),
}

#: Shared memory a block may use without opting in (bytes); plans stay below it.
SMEM_LIMIT = 48 * 1024

# shared memory of a kernel: (matrices of w_in*w_out, vectors of w_out, tiles of rows)
_SMEM = {"mgnn_fwd_step": (1, 1, 1), "mgnn_adj_step": (1, 0, 1), "mgnn_fwd_sweep": (1, 1, 1),
         "mgnn_adj_sweep": (1, 0, 2), "mgnn_tan_sweep": (1, 1, 2),
         "mgnn_soadj_sweep": (1, 0, 4)}


def fused(w_in, w_out):
    """True when a layer ``w_in -> w_out`` runs on the fused narrow-layer kernels."""
    return 1 <= w_in <= FUSED_MAX_WIDTH and 1 <= w_out <= FUSED_MAX_WIDTH


def plan(name, itemsize, w_in, w_out, s, k=1, n_sm=132):
    """Launch plan of a fused kernel: ``dict(rpt, rows, grid, block, smem)``.

    ``rpt`` (rows per thread) is the largest of 8, 4, 2, 1 whose shared memory fits
    :data:`SMEM_LIMIT` and that still gives at least two blocks per multiprocessor
    (``n_sm``) over the ``k`` layers of a stack; small batches get small tiles and
    more blocks. The tile row count is ``(NT // max(w_in, w_out)) * rpt``.

    Examples
    --------
    >>> p = plan("mgnn_fwd_sweep", 8, 32, 32, s=5000)
    >>> p["rpt"], p["rows"], p["grid"], p["smem"] <= SMEM_LIMIT
    (2, 16, (313, 1, 1), True)
    >>> plan("mgnn_fwd_sweep", 8, 32, 32, s=50000)["rpt"]
    8
    """
    if not fused(w_in, w_out):
        raise ValueError(f"no fused kernel for a layer {w_in} -> {w_out} (widths <= "
                         f"{FUSED_MAX_WIDTH})")
    lay = max(w_in, w_out)  # threads are laid over the wider side
    tile_w = (w_out if name == "mgnn_adj_step" else w_in) + 1
    nmat, nvec, ntile = _SMEM[name]
    ng = NT // lay
    best = None
    for rpt in (8, 4, 2, 1):
        rows = ng * rpt
        smem = itemsize * (nmat * w_in * w_out + nvec * w_out + ntile * rows * tile_w)
        if smem > SMEM_LIMIT:
            continue
        blocks = -(-s // rows) * k
        best = (rpt, rows, smem)
        if blocks >= 2 * n_sm:
            break
    if best is None:  # pragma: no cover - widths <= 64 always fit with rpt = 1
        raise ValueError(f"{name}: no tile fits {SMEM_LIMIT} bytes of shared memory")
    rpt, rows, smem = best
    return {"rpt": rpt, "rows": rows, "grid": (-(-s // rows), k, 1), "block": (NT, 1, 1),
            "smem": smem}


def colsum_plan(s, k=1, n_sm=132):
    """``(chunk, nchunks)`` of the two-phase column sum: about four blocks per
    multiprocessor over the ``k`` blocks, chunks of at least 64 rows.

    Examples
    --------
    >>> colsum_plan(50000)
    (95, 527)
    >>> colsum_plan(64, k=1024)
    (64, 1)
    """
    want = max(1, (4 * n_sm) // max(k, 1))
    chunk = max(64, -(-s // want))
    return chunk, -(-s // chunk)


def instance(name, dtype, *widths, rpt=None):
    """The name expression of a template instance, e.g.
    ``mgnn_fwd_step<double,32,32,4>``.

    Examples
    --------
    >>> import numpy as np
    >>> instance("mgnn_fwd_sweep", np.float32, 16, rpt=2)
    'mgnn_fwd_sweep<float,16,2>'
    >>> instance("mgnn_colsum_part", np.float64)
    'mgnn_colsum_part<double>'
    """
    import numpy as np

    ct = {np.dtype(np.float64): "double", np.dtype(np.float32): "float"}[np.dtype(dtype)]
    args = [ct, *(str(int(w)) for w in widths)] + ([] if rpt is None else [str(int(rpt))])
    return f"{name}<{','.join(args)}>"


# ------------------------------------------------------------------ graph capture
#: Widest layer (input and output width) that the fused narrow-layer kernels take:
#: its weights sit in shared memory. Wider layers go to cuBLAS.
FUSED_MAX_WIDTH = 64

_LOSSES = ("mse_value", "mse_value_grad", "mse_hessp", "cross_entropy_value",
           "cross_entropy_value_grad", "cross_entropy_hessp")
_STEPS = ("forward_step", "adjoint_step", "forward_step_batch", "adjoint_step_batch")
_SWEEPS = ("forward_sweep", "tangent_sweep")


def capturable(name, *args, **kwargs):
    """Can the GPU kernel ``name`` with these arguments be captured in a CUDA graph?

    Returns True, or a string that says why not. CuPy refuses cuBLAS calls during
    stream capture (``cupy_backends/cuda/libs/cublas.pyx``), so a call is
    capturable only when it runs entirely on the fused raw kernels: a forward step
    of widths <= :data:`FUSED_MAX_WIDTH`, an adjoint step of such widths without the
    weight gradient (``gW``, a cuBLAS GEMM), the forward and tangent sweeps. The
    adjoint sweeps end in batched cuBLAS GEMMs for the weight gradients and are not
    capturable; a loss returns a host float (a synchronising read) and never is.
    The CPU stand-in for CuPy asks this when a kernel is called during a capture,
    so the rules are the GPU module's.

    Examples
    --------
    >>> import numpy as np
    >>> capturable("forward_step", None, np.zeros((8, 8)))
    True
    >>> capturable("forward_step", None, np.zeros((128, 128)))
    'a layer of width 128 > 64 needs cuBLAS, which CuPy does not capture'
    >>> capturable("adjoint_step", None, None, np.zeros((8, 8)), gW=np.zeros((8, 8)))
    'the weight gradient gW is a cuBLAS GEMM, which CuPy does not capture'
    """
    if name in _LOSSES:
        return "a loss returns a host float (a synchronising device-to-host read)"
    if name.startswith("activation") or name == "column_sum":
        return True
    if name in _STEPS:
        W = args[2] if name.startswith("adjoint") else args[1]
        w = max(W.shape[-2:])
        if w > FUSED_MAX_WIDTH:
            return (f"a layer of width {w} > {FUSED_MAX_WIDTH} needs cuBLAS, which CuPy "
                    "does not capture")
        if name.startswith("adjoint") and (kwargs.get("gW") is not None
                                           or len(args) > 8 and args[8] is not None):
            return "the weight gradient gW is a cuBLAS GEMM, which CuPy does not capture"
        return True
    if name in _SWEEPS:
        U = args[0]
        if U.shape[-1] > FUSED_MAX_WIDTH:
            return (f"a layer of width {U.shape[-1]} > {FUSED_MAX_WIDTH} needs cuBLAS, which "
                    "CuPy does not capture")
        return True
    if name in ("adjoint_sweep", "soadjoint_sweep"):
        return "the weight gradients of an adjoint sweep are batched cuBLAS GEMMs"
    return f"{name} has no capturable GPU implementation"
