"""Named configurations of the multilevel solvers, taken from published code.

A preset is a dict of keyword arguments: ``mgopt(H, theta0, **mgopt_preset("mtnn"))``.
Arguments given next to it override it: ``mgopt(H, theta0, **mgopt_preset("mtnn",
cycles=20))``. Each preset says where its numbers come from, and
:func:`mgopt_preset` returns a fresh copy, so changing it changes nothing here.

``'mtnn'``
    LLNL's MTNN (multilevel-in-width training; its ``poisson_example.py`` and
    ``darcy_example.py`` "typical execution" lines and
    ``HierarchyBuilder.build_standard_from_params``): SGD smoother with learning
    rate 0.01, momentum 0.9 and weight decay 1e-6 (PyTorch's ``SGD``), mini-batches
    of 200, 100 V-cycles, each smoothing stage 4 steps (its ``NextKLoader(4)``
    hands every stage the next 4 mini-batches, one pass), the same on the coarsest
    level; the tau-correction computed on the mini-batches the level has just
    pre-smoothed on (its ``WholeSetTau`` over the cycle's subset); the momentum
    restricted like the parameters and its coarse change prolonged back
    (``ParamMomentumExtractor`` with ``SecondOrderRestriction`` /
    ``SecondOrderProlongation``); the neuron pairs re-matched every 10 cycles
    (``redo_matching_frequency``). The hierarchy is MTNN's two levels in width,
    ``width_hierarchy(objective, theta0, 2)`` (:func:`mtnn_hierarchy`); MTNN's
    networks are fully connected (widths 400, 400 for Poisson, 1024, 1024, 1024 for
    Darcy), mgnn's are residual networks of one width.

**Units of the MSE.** MTNN's rates are for PyTorch's ``MSELoss`` (the mean over
samples *and* outputs); mgnn's MSE is ``1/(2s) sum ||y_i - t_i||^2`` (summed over the
``m`` outputs, halved), whose gradient is ``m / 2`` times larger. The same SGD
trajectory in mgnn's units has learning rate ``lr * 2 / m`` and weight decay
``weight_decay * m / 2``: ``mgopt_preset("mtnn", mse_outputs=m)`` converts.
"""

from __future__ import annotations

import copy

__all__ = ["MGOPT_PRESETS", "mgopt_preset", "mtnn_hierarchy"]

#: The presets of :func:`mgopt_preset` (module docstring).
MGOPT_PRESETS = {
    "mtnn": dict(
        smoother="sgd",
        smoother_options={"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-6,
                          "batch_size": 200},
        pre=4,
        post=4,
        coarse_iters=4,
        cycles=100,
        cycle="V",
        tau="smoothing",
        state_transfer="fas",
        rematch_every=10,
        line_search=False,
    ),
}


def mgopt_preset(name, mse_outputs=None, **overrides):
    """Keyword arguments of :func:`~mgnn.multilevel.mgopt` for the preset ``name``.

    Parameters
    ----------
    name : str
        One of :data:`MGOPT_PRESETS`.
    mse_outputs : int, optional
        Convert a preset written for PyTorch's ``MSELoss`` to mgnn's MSE on a network
        of this many outputs (module docstring); the preset's own numbers otherwise.
    **overrides
        Arguments that replace the preset's (``smoother_options`` entries are
        merged into the preset's dict).

    Examples
    --------
    >>> kw = mgopt_preset("mtnn", cycles=5)
    >>> kw["cycles"], kw["smoother"], kw["smoother_options"]["momentum"]
    (5, 'sgd', 0.9)
    >>> mgopt_preset("mtnn", smoother_options={"batch_size": 50})["smoother_options"]
    {'lr': 0.01, 'momentum': 0.9, 'weight_decay': 1e-06, 'batch_size': 50}
    >>> mgopt_preset("mtnn", mse_outputs=4)["smoother_options"]["lr"]   # 0.01 * 2 / 4
    0.005
    >>> mgopt_preset("adam")
    Traceback (most recent call last):
    ...
    ValueError: unknown preset 'adam'; expected one of 'mtnn'
    """
    if name not in MGOPT_PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of "
                         + ", ".join(repr(k) for k in MGOPT_PRESETS))
    kw = copy.deepcopy(MGOPT_PRESETS[name])
    if mse_outputs is not None:
        from mgnn._validation import check_positive_int

        m = check_positive_int(mse_outputs, "mse_outputs")
        so0 = kw["smoother_options"]
        so0["lr"] = so0["lr"] * 2.0 / m
        so0["weight_decay"] = so0["weight_decay"] * m / 2.0
    so = overrides.pop("smoother_options", None)
    if so is not None:
        if not isinstance(so, dict):
            raise TypeError("smoother_options must be a dict to merge into the preset's, got "
                            f"{type(so).__name__}")
        kw["smoother_options"].update(so)
    kw.update(overrides)
    return kw


def mtnn_hierarchy(objective, theta0):
    """MTNN's hierarchy: two levels, the fine state neurons paired by similarity.

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.nets import ResNet
    >>> net = ResNet(4, 8, 1, 2, activation="relu", task="regression")
    >>> [lv.net.width for lv in mtnn_hierarchy(net, net.init(0)).levels]
    [8, 4]
    """
    from mgnn.multilevel.width import width_hierarchy

    return width_hierarchy(objective, theta0, 2)
