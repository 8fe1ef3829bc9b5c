"""Domain decomposition of theta (additive/multiplicative Schwarz, APTS): not yet implemented.

The package exists so that the layout of DESIGN.md is complete; it exports nothing.
"""
