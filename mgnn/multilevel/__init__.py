"""Multilevel hierarchies (depth, width) and the solvers that walk them."""

from mgnn.multilevel.depth import DepthTransfer, depth_hierarchy, max_depth_levels
from mgnn.multilevel.hierarchy import Hierarchy, Level, Transfer

__all__ = ["DepthTransfer", "Hierarchy", "Level", "Transfer", "depth_hierarchy",
           "max_depth_levels"]

from mgnn.multilevel.nested import nested_iteration  # noqa: E402

__all__ += ["nested_iteration"]

from mgnn.multilevel.matching import (  # noqa: E402
    NeuronMatching,
    match_neurons,
    similarity_matrix,
    weight_norm_shares,
)
from mgnn.multilevel.width import (  # noqa: E402
    ComposedTransfer,
    WidthHierarchy,
    WidthTransfer,
    state_descriptors,
    width_hierarchy,
)

__all__ += ["ComposedTransfer", "NeuronMatching", "WidthHierarchy", "WidthTransfer",
            "match_neurons", "similarity_matrix", "state_descriptors", "weight_norm_shares",
            "width_hierarchy"]
from mgnn.multilevel.recursive_trust_region import rmtr  # noqa: E402

__all__ += ["rmtr"]

from mgnn.multilevel.mgopt import TauCorrected, mgopt  # noqa: E402

__all__ += ["TauCorrected", "mgopt"]

from mgnn.multilevel.presets import MGOPT_PRESETS, mgopt_preset, mtnn_hierarchy  # noqa: E402
from mgnn.multilevel.sampling import SampleSize  # noqa: E402

__all__ += ["MGOPT_PRESETS", "SampleSize", "mgopt_preset", "mtnn_hierarchy"]
