"""Compute kernels of mgnn: one module per backend, no state, no policy."""
