"""CUDA C sources of the im2col / col2im kernels of :mod:`mgnn.kernels.gpu_conv`.

Kept apart from the CuPy module (as :mod:`mgnn.kernels.cuda_source` is) so that
``tests/test_conv_gpu.py`` can compile them with ``nvcc`` for float and double and run
the same text on the CPU (``g++``, one loop over ``i``) without CuPy or a GPU. Each
entry of :data:`KERNELS` is ``(in_params, out_params, body)`` in the form of
``cupy.ElementwiseKernel``; every array is ``raw`` (a flat 1-D view of a C-contiguous
array), the index ``i`` runs over the elements of the output, and :data:`SCALARS`
names the scalar parameters. The layouts are those of :mod:`mgnn.kernels.cpu_conv`
(images channels last, kernels HWIO, the im2col matrix ``(s*H*W, 9*C)``).

* ``im2col``: one thread per entry of ``col`` (``n = s*H*W*9*C``):
  ``col[(j*H + y)*W + x, (ky*3 + kx)*C + c] = U[j, ((y+ky-1)*W + x+kx-1)*C + c]``,
  zero outside the image.
* ``col2im_add``: one thread per output pixel channel (``n = s*H*W*C``): ``out =
  base + col^T(E)``, the nine contributions gathered in the CPU kernel's order
  (``base`` first when ``has_base``, then ``ky``, ``kx`` ascending), so for equal
  ``E`` the result is bit-identical to :func:`mgnn.kernels.cpu_conv.col2im_add`.
  ``out`` may be ``base`` (each thread reads and writes its own element).
"""

#: Scalar parameters (everything else is a raw array).
SCALARS = {"H", "W", "C", "has_base"}

_IM2COL = r"""
const ptrdiff_t nine_c = 9 * (ptrdiff_t)C;
const ptrdiff_t r = i / nine_c;
const int j = (int)(i - r * nine_c);
const int k = j / C, c = j - k * C;
const int x = (int)(r % W);
const ptrdiff_t q = r / W;
const int y = (int)(q % H);
const ptrdiff_t smp = q / H;
const int yy = y + k / 3 - 1, xx = x + k % 3 - 1;
col[i] = (yy >= 0 && yy < H && xx >= 0 && xx < W)
    ? U[((smp * H + yy) * W + xx) * C + c] : T(0);
"""

_COL2IM = r"""
const int c = (int)(i % C);
const ptrdiff_t p = i / C;
const int x = (int)(p % W);
const ptrdiff_t q = p / W;
const int y = (int)(q % H);
const ptrdiff_t smp = q / H;
T acc = has_base ? base[i] : T(0);
for (int ky = 0; ky < 3; ++ky) {
    const int yy = y - ky + 1;
    if (yy < 0 || yy >= H) continue;
    for (int kx = 0; kx < 3; ++kx) {
        const int xx = x - kx + 1;
        if (xx < 0 || xx >= W) continue;
        acc += E[(((smp * H + yy) * W + xx) * 9 + ky * 3 + kx) * (ptrdiff_t)C + c];
    }
}
out[i] = acc;
"""

#: name -> (in_params, out_params, body) of a ``cupy.ElementwiseKernel``.
KERNELS = {
    "im2col": ("raw T U, int32 H, int32 W, int32 C", "raw T col", _IM2COL),
    "col2im_add": ("raw T E, raw T base, int32 H, int32 W, int32 C, bool has_base",
                   "raw T out", _COL2IM),
}
