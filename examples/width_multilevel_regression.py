"""Multilevel-in-width training (MTNN's MG/OPT) against single-level training.

    python examples/width_multilevel_regression.py [--seeds 10] [--out out] [--quick]

Claim under test (Ponce, Li et al., "Multilevel-in-width training for deep neural
network regression", and MTNN's documentation: the value is "regularization", i.e.
better worst cases): with MTNN's settings (:func:`mgnn.multilevel.mgopt_preset`
``('mtnn')``: SGD with momentum 0.9, learning rate 0.01, weight decay 1e-6, batch 200,
two width levels, 100 V-cycles of 4 smoothing steps, tau on the pre-smoothing
batches, pairs re-matched every 10 cycles; rate and weight decay converted from
PyTorch's ``MSELoss`` to mgnn's MSE, ``mse_outputs``), MG/OPT reaches the same mean and a lower
worst-case validation error over seeds than the same SGD alone at equal work.

Runs ``examples/multilevel_benchmark.py --suite width`` (MTNN's Poisson and Darcy
regressions, made by :func:`mgnn.data.poisson_regression` and
:func:`mgnn.data.darcy_regression`) and writes ``width_multilevel_regression.md``,
``.png`` and ``.json`` into ``--out``; the claim is checked in the Markdown's last
section. Any option of the benchmark may be added.
"""

from __future__ import annotations

import pathlib
import runpy
import sys


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    bench = runpy.run_path(str(pathlib.Path(__file__).with_name("multilevel_benchmark.py")),
                           run_name="multilevel_benchmark")
    return bench["main"](["--suite", "width", "--prefix", "width_multilevel_regression",
                          *argv])


if __name__ == "__main__":
    main()
