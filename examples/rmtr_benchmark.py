"""RMTR against single-level optimizers: the ``rmtr`` suite of the multilevel benchmark.

    python examples/rmtr_benchmark.py [--seeds 10] [--out out] [--quick]

Runs ``examples/multilevel_benchmark.py --suite rmtr`` (peaks, mnist1d and smooth
regression with ResNets of depth 32 and 3 depth levels) with the methods RMTR, its
objective-function-free variant, single-level trust region, L-BFGS, Adam and SGD,
and writes ``rmtr_benchmark.md``, ``.png`` and ``.json`` into ``--out``. Any option of
the benchmark may be added (``--problems``, ``--methods``, ...); see its docstring for
the protocol (targets, budgets, learning-rate tuning, work units).
"""

from __future__ import annotations

import pathlib
import runpy
import sys

METHODS = "RMTR,RMTR-OFF,TR,L-BFGS,Adam,SGD"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    bench = runpy.run_path(str(pathlib.Path(__file__).with_name("multilevel_benchmark.py")),
                           run_name="multilevel_benchmark")
    return bench["main"](["--suite", "rmtr", "--methods", METHODS, "--prefix",
                          "rmtr_benchmark", *argv])


if __name__ == "__main__":
    main()
