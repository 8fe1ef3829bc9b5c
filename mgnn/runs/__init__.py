"""Runs that survive: save and load networks, checkpoint and resume solvers, progress.

**Saving a network** (:func:`save_network`, :func:`load_network`): a trained
network, its ``theta`` and, where one exists, its hierarchy go to one ``.npz``
file with a JSON member ``meta.json`` (class, constructor arguments, dtype, mgnn
and NumPy versions). A distributed ``theta`` is gathered on save and rank 0
writes; on load rank 0 reads and broadcasts, and any number of ranks can scatter
it again (``LayerParallelObjective.scatter``).

**Checkpoints** (:class:`Checkpointer`, :func:`load_checkpoint`): every solver of
mgnn (``minimize`` with every method, LSGD included, ``nested_iteration``,
``rmtr``, ``mgopt``, ``mgnn.dd.apts`` and ``spqn``, and layer-parallel training with
its MGRIT warm starts) writes its whole state
every ``every`` iterations or ``seconds`` seconds and when SIGINT/SIGTERM arrives,
atomically (temporary file, then ``os.replace``), keeping the newest ``keep``.
Given the checkpoint as ``resume``, the solver continues **bit for bit** as the
uninterrupted run would have: the same iterates, losses, histories and work.

**Progress** (:mod:`mgnn.runs.progress`): ``disp``/``disp_every`` on every solver,
lines through :mod:`logging` (logger ``mgnn``), rank 0 only.

The resumable-state protocol
----------------------------
What a solver (or a stateful piece of one) does to be checkpointed:

1. **Stateful components** implement ``state_dict()`` returning plain data
   (NumPy arrays, Python scalars, strings, ``None``, lists, tuples, dicts with
   string keys; :mod:`mgnn.runs.archive` stores it) and ``load_state_dict(d)``
   restoring exactly that state. In mgnn: :class:`~mgnn.optim.History`,
   :class:`~mgnn.optim.stochastic.AdamUpdate`,
   :class:`~mgnn.optim.stochastic.SGDUpdate`,
   :class:`~mgnn.optim.stochastic.Batches` (with its generator's
   ``bit_generator.state``), :class:`~mgnn.optim.LBFGSMemory`,
   :class:`~mgnn.optim.LSR1`, :class:`~mgnn.optim.divergence.DivergenceMonitor`,
   :class:`~mgnn.mgrit.MGRITPropagation` (warm-start states per batch size,
   boost counters), :class:`~mgnn.dd.SchwarzState` (``from_state_dict`` builds it
   back), :class:`~mgnn.optim.lsgd.LSGDState`. An **objective and its**
   ``propagation`` that have the two methods are saved and restored by the
   checkpoint machinery without the solver doing anything
   (:func:`mgnn.runs.state.stateful_components`): a PINN objective that
   resamples collocation points, or a propagation with warm starts, only
   implements the pair.
2. **A single-level method** (a function ``method(objective, theta0, options,
   callback)`` for :func:`mgnn.optim.minimize`) merges
   :data:`mgnn.optim._common.RUN_OPTIONS` (``disp``, ``disp_every``,
   ``checkpoint``, ``resume``) into its defaults, builds its
   :class:`~mgnn.optim._common.Run` with the parsed options, calls
   ``run.restore(x)`` once before its loop (which restores history, work
   counters, iteration count, elapsed time and components, and returns the
   method's own dict), calls ``run.boundary(state_fn)`` at the end of every
   iteration (``state_fn()`` returns the method's dict: iterate, moments,
   memory, radius, RNG states, anything the next iteration reads) and returns
   ``run.interrupted_result(...)`` when it says stop, and ends with
   ``run.close()`` in a ``finally``. The loop in the docstring of
   :mod:`mgnn.optim._common` is the template; ``minimize_adam`` is an example.
3. **A solver that runs another** (nested iteration runs ``minimize`` per level)
   hands the inner run ``checkpointer.scope(wrap, offset, name)`` as its
   ``checkpoint`` option: the inner run polls and saves through it, ``wrap``
   puts the inner state into the outer one, ``offset`` shifts the iteration
   count. On resume the outer solver restores its part and passes
   ``Checkpoint(inner_state)`` as the inner run's ``resume``.
4. **Several ranks**: each rank writes its own file (``...-rank<r>of<P>.npz``)
   holding its slices; the decision to write or stop is agreed by a small
   all-reduce; a resume needs the same number of ranks. (A trained network, by
   contrast, is saved gathered and loads on any number of ranks.)

Bit-for-bit resumption holds when the resumed run is given the same objective
(data, network, propagation settings) and the same options; options that only
extend the run (a larger ``maxiter``) continue it. The ``time`` column of a
history is wall time and continues from the checkpoint's elapsed time.
"""

from mgnn.runs.archive import read_archive, write_archive
from mgnn.runs.checkpoint import (
    STATUS_INTERRUPTED,
    Checkpoint,
    Checkpointer,
    list_checkpoints,
    load_checkpoint,
)
from mgnn.runs.network import SavedNetwork, attach_objective, load_network, save_network
from mgnn.runs.progress import Progress, logger

__all__ = ["Checkpoint", "Checkpointer", "Progress", "STATUS_INTERRUPTED", "SavedNetwork",
           "attach_objective", "list_checkpoints", "load_checkpoint", "load_network", "logger",
           "read_archive", "save_network", "write_archive"]
