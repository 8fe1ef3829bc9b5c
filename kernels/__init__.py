"""Compute kernels of mgnn: one module per backend, no state, no policy.

This folder installs as ``mgnn.kernels``. Importing it under the bare name
``kernels`` (e.g. by running tools from the repository root with it on
``sys.path``) is refused: Numba's on-disk cache is shared by both names, and an
entry compiled under one name cannot be loaded under the other.
"""

if __name__ != "mgnn.kernels":  # pragma: no cover - guards against a misconfigured path
    raise ImportError(f"import mgnn.kernels, not {__name__!r} (the kernels folder installs as "
                      "mgnn.kernels)")
