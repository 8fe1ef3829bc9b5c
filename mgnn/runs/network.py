"""Save a trained network (and its hierarchy) to one file; load it anywhere.

The file is an ``.npz`` archive (:mod:`mgnn.runs.archive`): ``theta.npy`` holds the
parameters, ``meta.json`` the network's class and constructor arguments, its
dtype, the mgnn and NumPy versions, optional user metadata and, when a
hierarchy was saved, its levels (each level's network) and transfers (depth
transfers by their interpolation, width transfers by their pairing arrays, which
are members ``hierarchy/<k>/...npy``).

Under MPI, :func:`save_network` takes this rank's slice of ``theta`` together with
the :class:`~mgnn.mgrit.LayerParallelObjective` that distributed it, gathers the
whole vector, and world rank 0 writes; :func:`load_network` reads on rank 0 and
broadcasts, so the saved network loads on any number of ranks (scatter it again
with ``LayerParallelObjective.scatter``).
"""

from __future__ import annotations

import datetime
import os
import platform

import numpy as np

from mgnn.backend import to_host
from mgnn.runs.archive import read_archive, write_archive

__all__ = ["save_network", "load_network", "SavedNetwork", "network_config", "build_network",
           "attach_objective"]

FORMAT = "mgnn-network"
FORMAT_VERSION = 1


def _resnet_config(net):
    return {"n_in": net.n_in, "width": net.width, "depth": net.depth, "n_out": net.n_out,
            "T": net.T, "activation": net.activation, "task": net.task,
            "opening_activation": net.opening_activation, "dtype": np.dtype(net.dtype).name}


def _resnet_build(cfg):
    from mgnn.nets import ResNet

    cfg = dict(cfg)
    args = [cfg.pop(k) for k in ("n_in", "width", "depth", "n_out")]
    cfg["dtype"] = np.dtype(cfg["dtype"])
    return ResNet(*args, **cfg)


#: Networks mgnn knows how to save: class path -> (config of a net, net from a config).
#: Another class is saved through its own ``get_config()`` and classmethod
#: ``from_config(config)``.
NETWORKS = {"mgnn.nets.ResNet": (_resnet_config, _resnet_build)}


def _class_path(net):
    cls = type(net)
    mod = cls.__module__
    if mod == "mgnn.nets.resnet":
        mod = "mgnn.nets"
    return f"{mod}.{cls.__qualname__}"


def network_config(net):
    """``{"class": path, "config": constructor arguments}`` of a network (plain data)."""
    path = _class_path(net)
    if path in NETWORKS:
        return {"class": path, "config": NETWORKS[path][0](net)}
    get = getattr(net, "get_config", None)
    if callable(get) and callable(getattr(type(net), "from_config", None)):
        return {"class": path, "config": get()}
    raise TypeError(f"cannot save a {type(net).__name__}: mgnn saves ResNet and networks with "
                    "get_config() and a from_config(config) classmethod")


def build_network(spec):
    """The network a :func:`network_config` describes."""
    path = spec["class"]
    if path in NETWORKS:
        return NETWORKS[path][1](spec["config"])
    import importlib

    mod, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"the saved network's class {path} cannot be imported: {exc}") from exc
    return cls.from_config(spec["config"])


# ----------------------------------------------------------------------------- hierarchy
def _transfer_spec(t):
    from mgnn.multilevel.depth import DepthTransfer
    from mgnn.multilevel.width import ComposedTransfer, WidthTransfer

    if isinstance(t, DepthTransfer):
        return {"type": "DepthTransfer", "interpolation": t.interpolation}
    if isinstance(t, WidthTransfer):
        return {"type": "WidthTransfer", "coarse_of": t.coarse_of, "shares": t.shares}
    if isinstance(t, ComposedTransfer):
        return {"type": "ComposedTransfer", "middle": network_config(t.first.coarse),
                "first": _transfer_spec(t.first), "second": _transfer_spec(t.second)}
    raise TypeError(f"cannot save a hierarchy with a {type(t).__name__} transfer (mgnn saves "
                    "depth, width and composed transfers)")


def _build_transfer(spec, fine, coarse):
    from mgnn.multilevel.depth import DepthTransfer
    from mgnn.multilevel.width import ComposedTransfer, WidthTransfer

    kind = spec["type"]
    if kind == "DepthTransfer":
        return DepthTransfer(fine, coarse, spec["interpolation"])
    if kind == "WidthTransfer":
        return WidthTransfer(fine, coarse, spec["coarse_of"], spec["shares"])
    if kind == "ComposedTransfer":
        mid = build_network(spec["middle"])
        return ComposedTransfer(_build_transfer(spec["first"], fine, mid),
                                _build_transfer(spec["second"], mid, coarse))
    raise ValueError(f"unknown transfer type {kind!r} in the saved hierarchy")


def _hierarchy_spec(hierarchy, net):
    levels = getattr(hierarchy, "levels", None)
    if not levels:
        raise TypeError(f"hierarchy must be a Hierarchy, got {type(hierarchy).__name__}")
    if network_config(levels[0].net) != network_config(net):
        raise ValueError("hierarchy.levels[0].net must be the saved network")
    return {"description": hierarchy.description,
            "levels": [network_config(lv.net) for lv in levels],
            "transfers": [_transfer_spec(lv.transfer) for lv in levels[:-1]]}


def _build_hierarchy(spec):
    from mgnn.multilevel.hierarchy import Hierarchy, Level

    nets = [build_network(s) for s in spec["levels"]]
    transfers = [_build_transfer(t, nets[l], nets[l + 1])
                 for l, t in enumerate(spec["transfers"])]
    levels = [Level(nets[l], None, transfers[l] if l < len(transfers) else None)
              for l in range(len(nets))]
    return Hierarchy(levels, spec["description"])


def attach_objective(hierarchy, objective):
    """A copy of a hierarchy of networks whose levels carry objectives on ``objective``'s
    data: level 0 gets ``objective`` (its network must be level 0's), coarser levels
    ``objective.with_net(net)`` (work charged by flop ratio)."""
    from mgnn.multilevel.hierarchy import Hierarchy, Level

    if network_config(objective.net) != network_config(hierarchy.levels[0].net):
        raise ValueError("objective.net must equal the hierarchy's finest network")
    levels = [Level(lv.net, objective if l == 0 else objective.with_net(lv.net), lv.transfer)
              for l, lv in enumerate(hierarchy.levels)]
    return Hierarchy(levels, hierarchy.description)


# ----------------------------------------------------------------------------- save / load
class SavedNetwork:
    """What :func:`load_network` returns.

    Attributes
    ----------
    net : ResNet
        The network, rebuilt from its constructor arguments.
    theta : ndarray
        Its parameters (all of them, on every rank).
    hierarchy : Hierarchy or None
        The saved hierarchy of networks (levels without objectives: give them one
        with :func:`attach_objective`).
    metadata : dict
        What the caller of :func:`save_network` stored.
    meta : dict
        The whole ``meta.json`` (versions, time, ...).
    """

    def __init__(self, net, theta, hierarchy, metadata, meta):
        self.net, self.theta, self.hierarchy = net, theta, hierarchy
        self.metadata, self.meta = metadata, meta

    def __iter__(self):  # net, theta = load_network(path)
        return iter((self.net, self.theta))

    def __repr__(self):
        h = f", hierarchy of {self.hierarchy.n_levels} levels" if self.hierarchy else ""
        return (f"SavedNetwork({self.net!r}{h}, saved by mgnn {self.meta.get('mgnn_version')} "
                f"on {self.meta.get('saved')})")


def _world():
    from mgnn.runs.checkpoint import _world as world

    return world()


def save_network(path, net, theta, *, objective=None, hierarchy=None, metadata=None):
    """Save a network and its parameters (and hierarchy) to ``path`` (an ``.npz`` file).

    Parameters
    ----------
    path : str or os.PathLike
        The file; written atomically (temporary file, then rename). ``.npz`` is
        appended when the name has no suffix.
    net : ResNet
        The network (any class :func:`network_config` knows).
    theta : ndarray
        Its parameters: all of them, or this rank's slice when ``objective`` is a
        distributed objective (then the slices are gathered first).
    objective : LayerParallelObjective, optional
        The distributed objective whose ``gather`` assembles ``theta``.
    hierarchy : Hierarchy, optional
        A hierarchy whose finest network is ``net`` (depth, width or composed
        transfers); saved with the network.
    metadata : dict, optional
        JSON-able data kept with the network (``SavedNetwork.metadata``).

    Returns
    -------
    str
        The path written (on every rank; world rank 0 writes, the others wait).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from mgnn.nets import ResNet
    >>> net = ResNet(2, 4, 8, 3, T=2.0, activation="relu")
    >>> theta = net.init(0)
    >>> path = save_network(os.path.join(tempfile.mkdtemp(), "net"), net, theta,
    ...                     metadata={"accuracy": 0.97})
    >>> loaded = load_network(path)
    >>> loaded.net
    ResNet(n_in=2, width=4, depth=8, n_out=3, T=2.0, h=0.25, activation='relu',
           n_params=187, dtype=float64)
    >>> bool(np.array_equal(loaded.theta, theta)), loaded.metadata
    (True, {'accuracy': 0.97})
    >>> np.load(path)["theta"].shape        # readable without mgnn
    (187,)
    """
    import mgnn

    path = os.fspath(path)
    if not os.path.splitext(path)[1]:
        path += ".npz"
    spec = network_config(net)
    theta_arr = to_host(theta)
    if objective is not None and callable(getattr(objective, "gather", None)):
        theta_arr = objective.gather(theta_arr)
    theta_arr = net.check_theta(theta_arr, "theta")
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    hspec = None if hierarchy is None else _hierarchy_spec(hierarchy, net)
    world = _world()
    if world.rank == 0:
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "network": spec,
                "n_params": int(net.n_params), "dtype": np.dtype(net.dtype).name,
                "mgnn_version": mgnn.__version__, "numpy_version": np.__version__,
                "python": platform.python_version(),
                "saved": datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds"),
                "saved_from_ranks": world.size, "metadata": metadata}
        tree = {"theta": theta_arr}
        if hspec is not None:
            tree["hierarchy"] = hspec
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"the folder of {path} does not exist")
        write_archive(path, meta, tree)
    if world.size > 1:
        world.barrier()
    return path


def load_network(path):
    """Load what :func:`save_network` wrote; returns a :class:`SavedNetwork`.

    Unpacks as ``net, theta = load_network(path)``. Under MPI, world rank 0 reads
    the file and broadcasts it, so only rank 0 needs to see it.
    """
    path = os.fspath(path)
    world = _world()
    if world.size > 1:
        data = None
        if world.rank == 0:
            with open(path, "rb") as fh:
                data = fh.read()
        n = np.array([0 if data is None else len(data)], dtype=np.int64)
        world.Bcast(n, 0)
        buf = np.frombuffer(data, dtype=np.uint8).copy() if data is not None else \
            np.empty(int(n[0]), dtype=np.uint8)
        world.Bcast(buf, 0)
        import io

        source = io.BytesIO(buf.tobytes())
    else:
        source = path
    meta, tree = read_archive(source)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a saved mgnn network (format {meta.get('format')!r})")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path} has network format version {meta['format_version']}; this "
                         f"mgnn reads up to {FORMAT_VERSION}")
    net = build_network(meta["network"])
    theta = net.check_theta(tree["theta"], "the saved theta")
    hierarchy = None if tree.get("hierarchy") is None else _build_hierarchy(tree["hierarchy"])
    return SavedNetwork(net, theta, hierarchy, meta.get("metadata"), meta)
