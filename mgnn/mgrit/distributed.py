"""The training objective with the layers distributed over MPI ranks (and samples
over a second axis).

With ``P`` ranks in the layer communicator, rank ``r`` owns the residual layers
``L[r] .. L[r+1]-1`` (``L = block_offsets(N, P)``), their weights, states and
records; rank 0 also owns the opening layer, the last rank the closing layer
and the loss. Rank ``r``'s part of ``theta`` is one contiguous slice of the
global vector (:attr:`LayerParallelObjective.theta_slice`), so an optimizer
sees an ordinary 1-D array. Inner products go through :class:`LayerBlockSpace`,
whose dot product is the exactly rounded sum (``math.fsum``) of per-block
partial dots computed by a fixed sequential loop: it is the same on any
number of ranks, and so are the optimizers' iterates.

A data communicator of size ``D`` splits the samples in blocks; each group of
layer ranks evaluates its block and the losses and gradients are summed
(weighted by the block sizes) over the data communicator.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from mgnn._validation import check_array, check_choice, check_scalar
from mgnn.backend import kernels_for
from mgnn.losses import LOSSES, Loss
from mgnn.mgrit.layer_parallel import MGRITPropagation
from mgnn.objective import check_targets
from mgnn.parallel.comm import SerialComm, get_comm
from mgnn.parallel.partition import block_offsets
from mgnn.parallel.space import DistributedSpace
from mgnn.work import WorkCounter

__all__ = ["LayerParallelObjective", "LayerBlockSpace"]


@njit(cache=True)
def _segment_dots(x, y, bounds, out):
    for k in range(bounds.size - 1):
        acc = 0.0
        for i in range(bounds[k], bounds[k + 1]):
            acc += x[i] * y[i]
        out[k] = acc


class LayerBlockSpace(DistributedSpace):
    """Distributed Euclidean space whose dot product does not depend on the ranks.

    The local slice is cut into segments (opening layer, each residual layer,
    closing layer); each segment's dot is a sequential loop, the partial dots
    of all ranks are gathered and summed exactly rounded (``math.fsum``).

    Parameters
    ----------
    comm : Comm
        The layer communicator.
    bounds : array of int
        Segment boundaries of the local slice (local indices, from 0 to its length).
    counts : list of int
        Number of segments of every rank.

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.parallel import SerialComm
    >>> s = LayerBlockSpace(SerialComm(), np.array([0, 2, 4]), [2])
    >>> s.dot(np.array([1.0, 2.0, 3.0, 4.0]), np.ones(4))
    10.0
    """

    def __init__(self, comm, bounds, counts):
        super().__init__(comm)
        self.bounds = np.ascontiguousarray(bounds, dtype=np.int64)
        self.counts = list(counts)
        self._part = np.empty(self.bounds.size - 1)
        self._all = np.empty(sum(self.counts))

    def dot(self, x, y):
        _segment_dots(x, y, self.bounds, self._part)
        if self.comm.size == 1:
            return math.fsum(self._part)
        self.comm.allgatherv(self._part, self._all, self.counts)
        return math.fsum(self._all)

    def __repr__(self):
        return f"LayerBlockSpace({self.bounds.size - 1} segments on this rank, comm={self.comm!r})"


class LayerParallelObjective:
    """Loss of a ResNet whose layers (and samples) are distributed over MPI ranks.

    Every rank holds the full data ``X, Y`` (or at least the same arrays); it
    evaluates the samples of its data block. The methods take and return the
    rank-local slice of ``theta``.

    Parameters
    ----------
    net : ResNet
    X, Y : arrays
        All samples and targets (the same on every rank).
    comm : None, Comm or mpi4py communicator
        Layer communicator (default: all processes).
    data_comm : None, Comm or mpi4py communicator
        Data communicator (default: none, one data block).
    loss : {'cross_entropy', 'mse'}, optional
    tikhonov : float
        Weight of (1/2)||theta||^2.
    smoothness : float
        Weight of the time-derivative term (1/(2h)) sum ||theta_{n+1} - theta_n||^2
        over the residual layers (as in :class:`~mgnn.objective.Objective`); the
        layer blocks next to a rank's first and last layer come from its neighbours
        (one message each way per evaluation), and the gradient equals the serial
        one bit for bit.
    propagation : MGRITPropagation, optional
        Default: one level (the serial sweep, pipelined over the ranks). Its
        communicator is set to ``comm``.

    Attributes
    ----------
    theta_slice : slice
        The part of the global ``theta`` this rank owns.
    space : LayerBlockSpace
    counter : WorkCounter
        Charged in value-and-gradient evaluations of the whole network on all
        data, including the extra MGRIT work (same value on every rank).

    Examples
    --------
    >>> import numpy as np
    >>> from mgnn.nets import ResNet
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((30, 2)); y = (X[:, 0] > 0).astype(int)
    >>> net = ResNet(2, 4, 8, 2)
    >>> obj = LayerParallelObjective(net, X, y)
    >>> obj
    LayerParallelObjective(layers 0..7 of 8 on rank 0 of 1, samples 0..29 of 30 (data rank 0 of 1),
      MGRITPropagation(levels=1, ...), 182 of 182 parameters)
    >>> theta = net.init(rng)
    >>> f, g = obj.value_and_grad(obj.scatter(theta))
    >>> g.shape
    (182,)
    """

    def __init__(self, net, X, Y, *, comm=None, data_comm=None, loss=None, tikhonov=0.0,
                 smoothness=0.0, propagation=None):
        self.net = net
        self.comm = get_comm(comm)
        self.data_comm = SerialComm() if data_comm is None else get_comm(data_comm)
        X = check_array(X, "X", shape=(None, net.n_in))
        self.X = np.ascontiguousarray(X, dtype=net.dtype)
        self.Y = check_targets(net, Y, "Y", n=X.shape[0])
        if loss is None:
            loss = "cross_entropy" if net.task == "classification" else "mse"
        check_choice(loss, "loss", LOSSES)
        self.loss = Loss(loss)
        self.tikhonov = check_scalar(tikhonov, "tikhonov", low=0.0)
        self.smoothness = check_scalar(smoothness, "smoothness", low=0.0)
        if propagation is None:
            propagation = MGRITPropagation(levels=1)
        if not isinstance(propagation, MGRITPropagation):
            raise TypeError("propagation must be an MGRITPropagation, got "
                            f"{type(propagation).__name__}")
        propagation.comm = self.comm
        self.propagation = propagation
        P, r = self.comm.size, self.comm.rank
        N = net.depth
        if N < P:
            raise ValueError(f"net has {N} residual layers, fewer than the {P} layer ranks")
        L = block_offsets(N, P)
        self.layer_offsets = L
        self.l0, self.l1 = int(L[r]), int(L[r + 1])
        self.first, self.last = r == 0, r == P - 1
        start = 0 if self.first else net.layer_slice(self.l0).start
        stop = net.n_params if self.last else net.layer_slice(self.l1 - 1).stop
        self.theta_slice = slice(start, stop)
        self.n_local = stop - start
        self._res = slice(net.layer_slice(self.l0).start - start,
                          net.layer_slice(self.l1 - 1).stop - start)
        # segments for the reproducible dot product
        bounds = [0] + ([net.n_open] if self.first else [])
        bounds += [self._res.start + (k + 1) * net.block_size for k in range(self.l1 - self.l0)]
        if self.last:
            bounds.append(self.n_local)
        counts = [int(L[q + 1] - L[q]) + (q == 0) + (q == P - 1) for q in range(P)]
        self.space = LayerBlockSpace(self.comm, np.array(bounds), counts)
        D, d = self.data_comm.size, self.data_comm.rank
        off = block_offsets(self.X.shape[0], D)
        self.sample_range = (int(off[d]), int(off[d + 1]))
        self.counter = WorkCounter()
        self._buf = {}
        self._halo = None

    def __repr__(self):
        a, b = self.sample_range
        prop = repr(self.propagation).split(",")[0]
        return (f"LayerParallelObjective(layers {self.l0}..{self.l1 - 1} of {self.net.depth} on "
                f"rank {self.comm.rank} of {self.comm.size}, samples {a}..{b - 1} of "
                f"{self.n_samples} (data rank {self.data_comm.rank} of {self.data_comm.size}),\n"
                f"  {prop}, ...), {self.n_local} of {self.net.n_params} parameters)")

    @property
    def n_samples(self):
        return self.X.shape[0]

    @property
    def n_params(self):
        return self.n_local

    # -- moving theta ------------------------------------------------------------
    def scatter(self, theta):
        """This rank's slice (a copy) of a global parameter vector."""
        theta = self.net.check_theta(theta)
        return theta[self.theta_slice].copy()

    def gather(self, theta_local):
        """The global parameter vector, on every rank of the layer communicator."""
        counts = self.comm.allreduce(
            np.eye(self.comm.size)[self.comm.rank] * self.n_local).astype(np.int64).tolist()
        out = np.empty(self.net.n_params, dtype=self.net.dtype)
        self.comm.allgatherv(np.ascontiguousarray(theta_local), out, counts)
        return out

    # -- evaluation ----------------------------------------------------------------
    def _check_local(self, theta, name="theta"):
        return check_array(theta, name, shape=(self.n_local,), dtype=self.net.dtype)

    def _local_data(self, batch):
        a, b = self.sample_range
        if batch is None:
            return self.X[a:b], self.Y[a:b], b - a, self.n_samples
        batch = np.asarray(batch)
        if batch.ndim != 1 or batch.dtype.kind not in "iu" or batch.size == 0:
            raise TypeError("batch must be a non-empty 1-D integer index array")
        if int(batch.min()) < 0 or int(batch.max()) >= self.n_samples:
            raise ValueError(f"batch indices must lie in [0, {self.n_samples})")
        mine = batch[(batch >= a) & (batch < b)]
        return self.X[mine], self.Y[mine], mine.size, batch.size

    def _bufs(self, s):
        buf = self._buf.get(s)
        if buf is None:
            w, m = self.net.width, self.net.n_out
            dt = self.net.dtype
            buf = {k: np.zeros((s, w), dt) for k in ("U0", "S_open", "D_open", "lam")}
            buf["Y"] = np.empty((s, m), dt)
            buf["G"] = np.empty((s, m), dt)
            if hasattr(self.net, "local_buffers"):  # ConvResNet: im2col and pooling
                buf.update(self.net.local_buffers(s))
            self._buf[s] = buf
        return buf

    def _evaluate(self, theta, batch, want_grad):
        theta = self._check_local(theta)
        net = self.net
        k = kernels_for(np)
        Xl, Yl, s, total = self._local_data(batch)
        grad = np.zeros_like(theta) if want_grad else None
        val = 0.0
        reduced = False  # whether the loss is on every rank of the layer communicator
        if s:
            weight = s / total
            bufs = self._bufs(s)
            blocks = theta[self._res].reshape(-1, net.block_size)
            # a network with its own opening and closing layers (ConvResNet) applies
            # them to theta's slices; the dense ResNet's are written out here
            own = hasattr(net, "open_local")
            if self.first and own:
                net.open_local(theta[:net.n_open], Xl, bufs["U0"], bufs["S_open"], bufs)
            elif self.first:
                nw = net.width * net.n_in
                W_open = theta[:nw].reshape(net.width, net.n_in)
                b_open = theta[nw:net.n_open]
                k.forward_step(Xl, W_open, b_open, 1.0, net.act_open, bufs["S_open"],
                               bufs["U0"], skip=False)
            prop = self.propagation
            key = "all" if batch is None else np.asarray(batch).tobytes()
            eng = prop._forward_local(net, blocks, bufs["U0"], s, np, key)
            if self.last and hasattr(net, "close_local"):  # the same kernels as Objective
                close = theta[self._res.stop:]
                net.close_local(close, eng.Uloc[-1], bufs["Y"], bufs)
                if want_grad:
                    val = self.loss.value_grad(bufs["Y"], Yl, bufs["G"], np)
                    G = bufs["G"]
                    if weight != 1.0:
                        G *= weight
                    net.close_adjoint_local(close, eng.Uloc[-1], G, grad[self._res.stop:],
                                            bufs["lam"], bufs)
                else:
                    val = self.loss.value(bufs["Y"], Yl, np)
                val *= weight
            elif self.last:
                close = theta[self._res.stop:]
                Wc = close[: net.n_out * net.width].reshape(net.n_out, net.width)
                bc = close[net.n_out * net.width:]
                np.matmul(eng.Uloc[-1], Wc.T, out=bufs["Y"])
                bufs["Y"] += bc
                if want_grad:
                    val = self.loss.value_grad(bufs["Y"], Yl, bufs["G"], np)
                    G = bufs["G"]
                    if weight != 1.0:
                        G *= weight
                    gc = grad[self._res.stop:]
                    np.matmul(G.T, eng.Uloc[-1],
                              out=gc[: net.n_out * net.width].reshape(net.n_out, net.width))
                    np.sum(G, axis=0, out=gc[net.n_out * net.width:])
                    np.matmul(G, Wc, out=bufs["lam"])
                else:
                    val = self.loss.value(bufs["Y"], Yl, np)
                val *= weight
            if want_grad:
                # the loss from the last rank to all before the adjoint (adding zeros is
                # exact), so that every rank skips an adjoint from a non-finite start
                if self.comm.size > 1:
                    val = self.comm.allreduce(val if self.last else 0.0)
                    reduced = True
                gblocks = grad[self._res].reshape(-1, net.block_size)
                finite = math.isfinite(val)
                if finite:
                    lam0 = prop._backward_local(eng, bufs["lam"], gblocks)
                else:
                    # the forward overflowed: no adjoint (MGRIT refuses a non-finite
                    # start), a NaN gradient the optimizer's divergence check stops at
                    grad.fill(math.nan)
                if not finite:
                    pass
                elif self.first and own:
                    net.open_adjoint_local(theta[:net.n_open], Xl, lam0, bufs["S_open"],
                                           bufs["D_open"], grad[:net.n_open], bufs)
                elif self.first:
                    w, d = net.width, net.n_in
                    go = grad[:net.n_open]
                    k.adjoint_step(lam0, Xl, W_open, bufs["S_open"], 1.0, net.act_open,
                                   bufs["D_open"], gW=go[: w * d].reshape(w, d),
                                   gb=go[w * d:], skip=False)
            extra = prop.take_extra_work(net, self.n_samples)
        else:
            extra = 0.0
        # loss from the last rank to all (adding zeros is exact), then over data blocks
        if self.comm.size > 1 and not reduced:
            val = self.comm.allreduce(val if self.last else 0.0)
        if self.data_comm.size > 1:
            val = self.data_comm.allreduce(val)
            extra = self.data_comm.allreduce(extra)
            if want_grad:
                grad = self.data_comm.allreduce(grad)
        if not math.isfinite(val):
            # the same on every rank: drop the warm starts, which hold NaN/inf now
            self.propagation.reset()
        if self.tikhonov:
            val += 0.5 * self.tikhonov * self.space.dot(theta, theta)
            if want_grad:
                grad += self.tikhonov * theta
        if self.smoothness and self.net.depth > 1:
            val += self._smoothness(theta, grad)
        share = 1.0 if batch is None else len(batch) / self.n_samples
        self.counter.charge("grad" if want_grad else "value", share)
        self.counter.work += self.counter.scale * extra
        return (val, grad) if want_grad else val

    def _smoothness(self, theta, grad):
        """Value of the time-derivative regulariser (the same on every rank, exactly
        rounded sum of the per-pair squares); adds its gradient to ``grad``."""
        net, comm, r = self.net, self.comm, self.comm.rank
        blocks = theta[self._res].reshape(-1, net.block_size)
        left = right = None
        reqs = []
        if comm.size > 1:
            if self._halo is None:
                self._halo = (np.empty(net.block_size, net.dtype),
                              np.empty(net.block_size, net.dtype))
            if r > 0:
                left = self._halo[0]
                reqs += [comm.Irecv(left, r - 1, 7100), comm.Isend(blocks[0], r - 1, 7101)]
            if r + 1 < comm.size:
                right = self._halo[1]
                reqs += [comm.Irecv(right, r + 1, 7101), comm.Isend(blocks[-1], r + 1, 7100)]
            comm.waitall(reqs)
        c = self.smoothness / net.h
        # pair (n-1, n) belongs to the rank of layer n: its square in a fixed order
        ext = blocks if left is None else np.concatenate([left[None], blocks])
        d = ext[1:] - ext[:-1]
        pairs = np.einsum("ij,ij->i", d, d) if d.size else np.zeros(0)
        counts = [int(self.layer_offsets[q + 1] - self.layer_offsets[q]) - (q == 0)
                  for q in range(comm.size)]
        if comm.size > 1:
            allp = np.empty(sum(counts))
            comm.allgatherv(np.ascontiguousarray(pairs, dtype=np.float64), allp, counts)
        else:
            allp = pairs
        val = 0.5 * c * math.fsum(allp)
        if grad is not None:
            # as Objective: first -c (theta_{n+1} - theta_n), then +c (theta_n - theta_{n-1})
            g = grad[self._res].reshape(-1, net.block_size)
            ext_r = blocks if right is None else np.concatenate([blocks, right[None]])
            dr = ext_r[1:] - ext_r[:-1]
            g[: dr.shape[0]] -= c * dr
            g[blocks.shape[0] - d.shape[0]:] += c * d
        return val

    def value(self, theta, batch=None):
        """Objective value at this rank's slice ``theta`` (the same on every rank)."""
        return self._evaluate(theta, batch, False)

    def value_and_grad(self, theta, batch=None):
        """Value and this rank's slice of the gradient."""
        return self._evaluate(theta, batch, True)

    def grad(self, theta, batch=None):
        return self._evaluate(theta, batch, True)[1]

    def hessp(self, theta, v, batch=None):
        raise NotImplementedError(
            "hessp is not distributed over layers yet; use a quasi-Newton or first-order "
            "method (lbfgs, adam, sgd) or trust-region with hess='lsr1'")

    def features(self, theta, batch=None, out=None):
        """The last hidden states of a forward sweep and the matching targets.

        Collective over both communicators: every rank sweeps its layers. On the
        last layer rank the states of all samples of ``batch`` (default all data)
        are gathered over the data communicator (data blocks in rank order, each
        block's samples in batch order) and returned with their targets; on the
        other ranks the result is ``(None, None)``. Charged like :meth:`value`.
        See :meth:`mgnn.objective.Objective.features`.

        Parameters
        ----------
        theta : (n_local,) array
            This rank's slice.
        batch : 1-D integer array, optional
        out : (s, width) array, optional
            Receives the states on the last layer rank (any float dtype).

        Returns
        -------
        A : (s, width) array or None
        Y : (s, n_out) array or None

        Examples
        --------
        >>> import numpy as np
        >>> from mgnn.nets import ResNet
        >>> rng = np.random.default_rng(0)
        >>> X = rng.standard_normal((5, 2)); Y = rng.standard_normal((5, 1))
        >>> net = ResNet(2, 3, 4, 1, task="regression")
        >>> obj = LayerParallelObjective(net, X, Y)
        >>> A, T = obj.features(obj.scatter(net.init(rng)))
        >>> A.shape, T.shape
        ((5, 3), (5, 1))
        """
        from mgnn.nets.conv import refuse_conv

        refuse_conv(self.net, "LayerParallelObjective.features", "the pooled features of "
                    "the closing layer are not gathered over ranks")
        theta = self._check_local(theta)
        net = self.net
        Xl, Yl, s, total = self._local_data(batch)
        A = None
        extra = 0.0
        if s:
            bufs = self._bufs(s)
            blocks = theta[self._res].reshape(-1, net.block_size)
            if self.first:
                nw = net.width * net.n_in
                kernels_for(np).forward_step(
                    Xl, theta[:nw].reshape(net.width, net.n_in), theta[nw:net.n_open], 1.0,
                    net.act_open, bufs["S_open"], bufs["U0"], skip=False)
            eng = self.propagation._forward_local(net, blocks, bufs["U0"], s, np)
            A = eng.Uloc[-1]
            extra = self.propagation.take_extra_work(net, self.n_samples)
        if self.data_comm.size > 1:
            extra = self.data_comm.allreduce(extra)
        share = 1.0 if batch is None else len(batch) / self.n_samples
        self.counter.charge("value", share)
        self.counter.work += self.counter.scale * extra
        if not self.last:
            return None, None
        n_rows = total  # the samples of the batch over all data blocks
        if out is None:
            out = np.empty((n_rows, net.width), net.dtype)
        elif tuple(out.shape) != (n_rows, net.width):
            raise ValueError(f"out must have shape ({n_rows}, {net.width}), got "
                             f"{tuple(out.shape)}")
        if self.data_comm.size == 1:
            out[...] = A
            return out, Yl
        D = self.data_comm.size
        counts = self.data_comm.allreduce(np.eye(D)[self.data_comm.rank] * s)
        counts = counts.astype(np.int64).tolist()
        A_all = np.empty((n_rows, net.width), net.dtype)
        Y_all = np.empty((n_rows,) + self.Y.shape[1:], self.Y.dtype)
        mine = A if s else np.empty((0, net.width), net.dtype)
        self.data_comm.allgatherv(mine, A_all, counts)
        self.data_comm.allgatherv(np.ascontiguousarray(Yl), Y_all, counts)
        out[...] = A_all
        return out, Y_all

    def accuracy(self, theta, X=None, Y=None):
        """Classification accuracy of the full network (gathered theta, serial sweep)."""
        from mgnn.objective import Objective

        full = self.gather(theta)
        obj = Objective(self.net, self.X, self.Y)
        return obj.accuracy(full, X, Y)
