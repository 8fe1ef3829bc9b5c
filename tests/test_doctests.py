"""Run the doctests of ``mgnn.kernels`` under its installed name.

pytest collects doctests of ``mgnn/`` itself (``--doctest-modules``); the kernels
live in the ``kernels/`` folder but install as ``mgnn.kernels``, so they are run
here rather than collected from the folder (which would import them under the
bare name ``kernels``).
"""

import doctest

import mgnn.kernels.cpu
import mgnn.kernels.cpu_conv
import mgnn.kernels.cpu_fused
import mgnn.kernels.cpu_pinn
import mgnn.kernels.cpu_tiles
import mgnn.kernels.cuda_source
import pytest


@pytest.mark.parametrize("module", [mgnn.kernels.cpu, mgnn.kernels.cpu_conv,
                                    mgnn.kernels.cpu_fused, mgnn.kernels.cpu_tiles,
                                    mgnn.kernels.cpu_pinn, mgnn.kernels.cuda_source])
def test_kernel_doctests(module):
    res = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert res.attempted > 0 and res.failed == 0
