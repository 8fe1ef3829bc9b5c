"""Multilevel hierarchies (depth, width) and the solvers that walk them."""

from mgnn.multilevel.depth import DepthTransfer, depth_hierarchy, max_depth_levels
from mgnn.multilevel.hierarchy import Hierarchy, Level, Transfer

__all__ = ["DepthTransfer", "Hierarchy", "Level", "Transfer", "depth_hierarchy",
           "max_depth_levels"]

from mgnn.multilevel.nested import nested_iteration  # noqa: E402

__all__ += ["nested_iteration"]
