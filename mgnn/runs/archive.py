"""One file for arrays and metadata: a ``.npz`` (zip) archive with a JSON member.

Every file mgnn writes for a run (a saved network, a checkpoint) is a zip archive
that NumPy reads as an ``.npz``: each array is a member ``<name>.npy`` and the
metadata is the member ``meta.json``. Without mgnn, ``np.load(path)["theta"]``
gives the parameters and ``unzip -p path meta.json`` the metadata.

A *state tree* (what a solver's checkpoint holds) is plain data: dicts with string
keys, lists, tuples, ``None``, bools, ints, floats, strings and NumPy arrays.
Device arrays (CuPy) are copied to the host and marked as such: :func:`read_archive`
returns them as :class:`DeviceArrayCopy` (a NumPy array), and :func:`to_namespace`
puts exactly those back on the device of the resuming run (or leaves them on the
host when it runs on the CPU), while arrays that lived on the host (random-number
states, index arrays, small matrices) stay there. :func:`write_archive` stores every array as its
own member, named by its path in the tree, and the rest as JSON in which the
array is replaced by ``{"__array__": "<member>"}``; :func:`read_archive` rebuilds
the tree. Floats are written by ``repr`` and read back bit for bit (NaN and inf
as JSON's common extensions ``NaN``, ``Infinity``); Python ints of any size (a
PCG64 state) stay exact.

Writes are atomic: the archive is written to a temporary file in the same
directory, flushed to disk, and renamed over the target (``os.replace``), so a
reader (or a run killed mid-write) never sees a half-written file.

Examples
--------
>>> import numpy as np, tempfile, os
>>> tree = {"x": np.arange(3.0), "nit": 7, "rng": {"state": 2**100 + 1},
...         "pairs": [(np.ones(2), 0.5)], "f": float("inf")}
>>> path = os.path.join(tempfile.mkdtemp(), "state.npz")
>>> write_archive(path, {"kind": "demo"}, tree)
>>> meta, back = read_archive(path)
>>> meta["kind"], back["nit"], back["rng"]["state"] == 2**100 + 1, back["f"]
('demo', 7, True, inf)
>>> back["x"], back["pairs"][0][1], type(back["pairs"][0]).__name__
(array([0., 1., 2.]), 0.5, 'tuple')
>>> np.load(path)["x"]            # an ordinary .npz for NumPy
array([0., 1., 2.])
"""

from __future__ import annotations

import io
import json
import numbers
import os
import zipfile

import numpy as np

__all__ = ["write_archive", "read_archive", "encode_tree", "decode_tree", "atomic_write",
           "DeviceArrayCopy", "to_namespace"]

META = "meta.json"


class DeviceArrayCopy(np.ndarray):
    """A host copy of an array that lived on a device (CuPy) when it was written.

    It is a NumPy array in every respect; :func:`to_namespace` moves it back to the
    device of a resuming run.
    """


def _is_device_array(a):
    if isinstance(a, np.ndarray) or not hasattr(a, "dtype"):
        return False
    from mgnn.backend import get_namespace

    return get_namespace(a) is not np


def to_namespace(tree, xp):
    """The state tree with every :class:`DeviceArrayCopy` leaf as an array of ``xp``.

    ``xp`` is the array namespace of the run that resumes: a device namespace gets
    the arrays back on its device (one copy each); NumPy gets them as plain NumPy
    arrays (a checkpoint written on a GPU resumes on the CPU). Other leaves are
    returned as they are; containers are rebuilt.

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.testing import fakecupy
    >>> tree = {"x": np.ones(2).view(DeviceArrayCopy), "rng": np.arange(2)}
    >>> back = to_namespace(tree, fakecupy)
    >>> type(back["x"]).__module__, type(back["rng"]).__name__
    ('mgnn.testing.fakecupy', 'ndarray')
    >>> type(to_namespace(tree, np)["x"]) is np.ndarray
    True
    """
    if isinstance(tree, DeviceArrayCopy):
        host = tree.view(np.ndarray)
        return host if xp is np else xp.asarray(host)
    if isinstance(tree, dict):
        return {k: to_namespace(v, xp) for k, v in tree.items()}
    if isinstance(tree, tuple):
        return tuple(to_namespace(v, xp) for v in tree)
    if isinstance(tree, list):
        return [to_namespace(v, xp) for v in tree]
    return tree


def encode_tree(tree, arrays, path="state"):
    """JSON-ready copy of ``tree`` with arrays moved into the dict ``arrays``.

    Device arrays are copied to the host and marked ``"__device__": true``.
    Raises ``TypeError`` naming the path of a leaf that is not plain data.
    """
    device = _is_device_array(tree)
    if isinstance(tree, np.ndarray) or device:
        device = device or isinstance(tree, DeviceArrayCopy)
        a = tree.get() if _is_device_array(tree) else np.asarray(tree).view(np.ndarray)
        if a.dtype.hasobject:
            raise TypeError(f"{path}: object arrays cannot be stored")
        name = path
        k = 1
        while name in arrays:  # a path can only repeat through odd keys; keep it unique
            name, k = f"{path}~{k}", k + 1
        arrays[name] = a
        return {"__array__": name, "__device__": True} if device else {"__array__": name}
    if isinstance(tree, dict):
        out = {}
        for key, val in tree.items():
            if not isinstance(key, str):
                raise TypeError(f"{path}: dict keys must be strings, got {key!r}")
            if key.startswith("__") and key.endswith("__"):
                raise TypeError(f"{path}: key {key!r} is reserved")
            out[key] = encode_tree(val, arrays, f"{path}/{key}")
        return out
    if isinstance(tree, tuple):
        return {"__tuple__": [encode_tree(v, arrays, f"{path}/{i}") for i, v in enumerate(tree)]}
    if isinstance(tree, list):
        return [encode_tree(v, arrays, f"{path}/{i}") for i, v in enumerate(tree)]
    if tree is None or isinstance(tree, (bool, str)):
        return tree
    if isinstance(tree, np.bool_):
        return bool(tree)
    if isinstance(tree, numbers.Integral):
        return int(tree)
    if isinstance(tree, numbers.Real):
        return float(tree)
    raise TypeError(f"{path}: cannot store a {type(tree).__name__} in an archive "
                    "(plain data only: dict, list, tuple, str, bool, int, float, None, ndarray)")


def decode_tree(tree, arrays):
    """Inverse of :func:`encode_tree`."""
    if isinstance(tree, dict):
        if set(tree) == {"__array__"}:
            return arrays[tree["__array__"]]
        if set(tree) == {"__array__", "__device__"}:
            return arrays[tree["__array__"]].view(DeviceArrayCopy)
        if set(tree) == {"__tuple__"}:
            return tuple(decode_tree(v, arrays) for v in tree["__tuple__"])
        return {k: decode_tree(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [decode_tree(v, arrays) for v in tree]
    return tree


def atomic_write(path, write, durable=True):
    """Call ``write(fileobj)`` on a temporary file next to ``path``, then rename it.

    With ``durable`` the temporary file is ``fsync``-ed before ``os.replace`` and the
    folder after it (the file survives a power cut, at the cost of waiting for the
    disk); without, the rename is still atomic for readers and for a killed process.
    On any error the temporary file is removed and ``path`` is untouched.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    if not durable:
        return
    try:  # make the rename durable where the platform allows it
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # pragma: no cover - e.g. Windows
        pass


def write_archive(path, meta, tree=None, durable=True):
    """Write ``meta`` (JSON-able dict) and the state tree ``tree`` to ``path`` atomically
    (``durable``: ``fsync`` too, see :func:`atomic_write`).

    The tree is stored under ``meta["tree"]``; each array of the tree is the member
    ``<its path>.npy`` (e.g. ``theta.npy`` for ``tree["theta"]`` at the top level).
    """
    if not isinstance(meta, dict):
        raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
    arrays = {}
    body = dict(meta)
    if tree is not None:
        if isinstance(tree, dict):  # top-level arrays keep their own names (theta.npy)
            enc = {}
            for key, val in tree.items():
                if not isinstance(key, str):
                    raise TypeError(f"dict keys must be strings, got {key!r}")
                enc[key] = encode_tree(val, arrays, key)
        else:
            enc = encode_tree(tree, arrays, "tree")
        body["tree"] = enc
    text = json.dumps(body, indent=1, allow_nan=True)

    def write(fh):
        with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            zf.writestr(META, text)
            for name, a in arrays.items():
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
                zf.writestr(name + ".npy", buf.getvalue())

    atomic_write(path, write, durable)


def read_archive(path):
    """Read an archive written by :func:`write_archive`: ``(meta, tree)``.

    ``path`` may also be a binary file object. Raises ``ValueError`` naming the
    file when it is not such an archive.
    """
    if not hasattr(path, "read"):
        path = os.fspath(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path} is not an mgnn archive (not a zip/npz file: {exc})") from exc
    with zf:
        names = set(zf.namelist())
        if META not in names:
            raise ValueError(f"{path} is not an mgnn archive (no {META} member)")
        meta = json.loads(zf.read(META).decode("utf-8"))
        arrays = {}
        for name in names:
            if name.endswith(".npy"):
                with zf.open(name) as fh:
                    arrays[name[:-4]] = np.lib.format.read_array(fh, allow_pickle=False)
    tree = decode_tree(meta.pop("tree", None), arrays)
    return meta, tree
