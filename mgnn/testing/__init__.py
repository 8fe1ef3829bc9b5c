"""Testing utilities of mgnn.

:mod:`mgnn.testing.fakecupy`
    A CPU stand-in for CuPy: arrays that wrap NumPy data but refuse implicit
    conversion to NumPy exactly where CuPy does, registered with
    :mod:`mgnn.backend` as a device namespace, with an emulation of CUDA-graph
    stream capture. The test suite runs every solver on it, so that a host
    conversion in solver code fails in CI although no GPU is there.
"""
