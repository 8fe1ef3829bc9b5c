"""Loss functions on the network output: value, gradient, Hessian-vector product.

Each loss is a mean over the samples of a batch, so that a mini-batch value is an
unbiased estimate of the full-data value.

``'mse'``
    ``(1/(2s)) sum_i ||y_i - t_i||^2``; targets are an (s, n_out) float array.
``'cross_entropy'``
    ``(1/s) sum_i [log sum_j exp(y_ij) - y_{i, c_i}]`` (softmax cross-entropy,
    stable log-sum-exp); targets are integer class labels c_i in [0, n_out).
"""

from __future__ import annotations

import numpy as np

from mgnn.backend import kernels_for

LOSSES = ("mse", "cross_entropy")


class Loss:
    """A loss by name, with ``value``, ``value_grad`` and ``hessp`` on outputs ``Y``.

    Examples
    --------
    >>> import numpy as np
    >>> loss = Loss("cross_entropy")
    >>> Y = np.zeros((2, 3)); G = np.empty_like(Y)
    >>> f = loss.value_grad(Y, np.array([0, 2]), G)
    >>> print(f"{f:.6f} {np.log(3):.6f}")
    1.098612 1.098612
    """

    def __init__(self, name):
        if name not in LOSSES:
            raise ValueError(f"unknown loss {name!r}; expected one of {LOSSES}")
        self.name = name

    def __repr__(self):
        return f"Loss({self.name!r})"

    def value(self, Y, targets, xp=np):
        k = kernels_for(xp)
        if self.name == "mse":
            return float(k.mse_value(Y, targets))
        return float(k.cross_entropy_value(Y, targets))

    def value_grad(self, Y, targets, G, xp=np):
        """Return the loss and write dLoss/dY into ``G``."""
        k = kernels_for(xp)
        if self.name == "mse":
            return float(k.mse_value_grad(Y, targets, G))
        return float(k.cross_entropy_value_grad(Y, targets, G))

    def hessp(self, Y, dY, out, xp=np):
        """Write the Hessian of the loss at ``Y`` applied to ``dY`` into ``out``."""
        k = kernels_for(xp)
        if self.name == "mse":
            k.mse_hessp(Y, dY, out)
        else:
            k.cross_entropy_hessp(Y, dY, out)
