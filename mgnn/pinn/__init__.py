"""Physics-informed training: PDE-residual objectives on mgnn's ResNet.

The network's output and its input derivatives (first derivatives and the
diagonal of the input Hessian) are propagated together through the layers by
hand-written stream kernels (:mod:`mgnn.kernels.cpu_pinn`, CuPy twins in
:mod:`mgnn.kernels.gpu_pinn`); their reverse sweeps give the exact gradient, and
tangent plus second-order adjoint sweeps exact Hessian (or Gauss-Newton)
products. :class:`PINNObjective` has the objective protocol of
:class:`mgnn.objective.Objective`, so every optimizer and multilevel solver
takes it unchanged.

- :mod:`mgnn.pinn.operators`: residuals as polynomials in u, u_j, u_jj
  (Poisson, diffusion-advection, Burgers, Allen-Cahn, Klein-Gordon, conditions);
- :mod:`mgnn.pinn.transforms`: input embeddings (periodic) and output transforms
  (exact boundary conditions);
- :mod:`mgnn.pinn.streams`: stream layouts, workspaces, sweeps;
- :mod:`mgnn.pinn.objective`: :class:`PINNObjective`, :class:`Condition`;
- :mod:`mgnn.pinn.propagation`: :class:`MGRITStreams` (layer-parallel sweeps).

Problems with reference solutions are in :mod:`mgnn.data.pde`.
"""

from mgnn.pinn.objective import HESSIANS, Condition, PINNObjective
from mgnn.pinn.operators import (
    PDES,
    Operator,
    allen_cahn,
    burgers,
    derivative,
    diffusion_advection,
    dirichlet,
    klein_gordon,
    make_pde,
    poisson,
)
from mgnn.pinn.propagation import MGRITStreams, StreamAdjointStepper, StreamStepper
from mgnn.pinn.streams import (
    SerialStreams,
    StreamLayout,
    StreamPropagation,
    StreamWorkspace,
    output_streams,
)
from mgnn.pinn.transforms import (
    Field,
    IdentityEmbedding,
    OutputTransform,
    PeriodicEmbedding,
    box_factor,
)

__all__ = ["HESSIANS", "PDES", "Condition", "Field", "IdentityEmbedding", "MGRITStreams",
           "Operator", "OutputTransform", "PINNObjective", "PeriodicEmbedding", "SerialStreams",
           "StreamAdjointStepper", "StreamLayout", "StreamPropagation", "StreamStepper",
           "StreamWorkspace", "allen_cahn", "box_factor", "burgers", "derivative",
           "diffusion_advection", "dirichlet", "klein_gordon", "make_pde", "output_streams",
           "poisson"]
