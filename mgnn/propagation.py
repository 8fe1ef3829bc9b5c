"""How states and adjoints travel through the residual layers.

An :class:`~mgnn.objective.Objective` does not sweep through the layers itself:
it asks its *propagation* to. :class:`SerialPropagation` is the exact
layer-by-layer sweep; MGRIT (layer-parallel) propagation implements the same
four methods, solving the forward and adjoint recursions by multigrid in the
layer dimension instead. The contract, for a network ``net``, parameters
``theta`` and a :class:`~mgnn.nets.resnet.Workspace` ``ws`` whose ``U[0]`` holds
the opened states:

``forward(net, theta, ws)``
    fill ``ws.U[1:]`` and the layer records ``ws.S``.
``backward(net, theta, ws, lam_N, grad_blocks)``
    given the adjoint ``lam_N`` of the final state, return the adjoint of
    ``U[0]`` and write each residual layer's gradient into ``grad_blocks``
    (depth, block_size).
``tangent(net, theta, dtheta, ws)``
    given ``ws.dU[0]``, fill the tangent states ``ws.dU[1:]`` and records ``ws.dZ``.
``second_order_backward(net, theta, dtheta, ws, lam_N, dlam_N, hv_blocks)``
    the second-order adjoint sweep; returns ``(lam_0, dlam_0)`` and writes the
    residual layers' Hessian-vector product into ``hv_blocks``.
"""

from __future__ import annotations

from mgnn.backend import kernels_for


class Propagation:
    """Base class: the interface of a propagation strategy (see module docstring)."""

    def forward(self, net, theta, ws):
        raise NotImplementedError

    def backward(self, net, theta, ws, lam_N, grad_blocks):
        raise NotImplementedError

    def tangent(self, net, theta, dtheta, ws):
        raise NotImplementedError

    def second_order_backward(self, net, theta, dtheta, ws, lam_N, dlam_N, hv_blocks):
        raise NotImplementedError


def _fused_sweeps(net, ws):
    """True when the kernel module of the workspace's namespace runs whole sweeps for
    this network (a module with whole-sweep kernels says so in ``uses_fused``)."""
    uses = getattr(kernels_for(ws.xp), "uses_fused", None)
    return uses is not None and uses(net.width, net.width, net.dtype)


class SerialPropagation(Propagation):
    """The exact sequential sweep through the layers, one step after another.

    Where the kernel module of the arrays' namespace has whole-sweep kernels for the
    network's width (``uses_fused``), each sweep is one call over all residual layers
    (``forward_sweep`` and its adjoint, tangent and second-order twins). On the CPU
    (:func:`mgnn.kernels.cpu.uses_fused`) the results are bit-identical to stepping
    layer by layer with the single-step kernels, which is what MGRIT's relaxation
    does, and do not depend on the number of threads; on the GPU a sweep is one
    launch for layers of width <= 64, whose weights sit in shared memory. Wider
    networks step layer by layer.

    Examples
    --------
    >>> SerialPropagation()
    SerialPropagation()
    """

    def __repr__(self):
        return "SerialPropagation()"

    # A network that brings its own serial sweeps (``net.sweep_forward`` and its
    # twins, e.g. :class:`~mgnn.nets.ConvResNet`) is swept by them; the dense
    # ResNet takes the code paths below.
    def forward(self, net, theta, ws):
        if hasattr(net, "sweep_forward"):
            return net.sweep_forward(theta, ws)
        k = kernels_for(ws.xp)
        p = net.unpack(theta)
        U, S, h, act = ws.U, ws.S, net.h, net.act
        if _fused_sweeps(net, ws):
            k.forward_sweep(U, p.residual, h, act, S)
            return
        for n in range(net.depth):
            k.forward_step(U[n], p.W[n], p.b[n], h, act, S[n], U[n + 1])

    def backward(self, net, theta, ws, lam_N, grad_blocks):
        if hasattr(net, "sweep_backward"):
            return net.sweep_backward(theta, ws, lam_N, grad_blocks)
        k = kernels_for(ws.xp)
        p = net.unpack(theta)
        w = net.width
        gW = grad_blocks[:, : w * w].reshape(net.depth, w, w)
        gb = grad_blocks[:, w * w:]
        L = ws.L
        cur = 0
        if lam_N is not L[0]:
            L[0][...] = lam_N
        if _fused_sweeps(net, ws) and grad_blocks.flags.c_contiguous:
            cur = k.adjoint_sweep(L, cur, ws.U, p.residual, ws.S, net.h, net.act, ws.D,
                                  grad_blocks.reshape(-1))
            return L[cur]
        for n in range(net.depth - 1, -1, -1):
            k.adjoint_step(L[cur], ws.U[n], p.W[n], ws.S[n], net.h, net.act, ws.D,
                           L=L[1 - cur], gW=gW[n], gb=gb[n])
            cur = 1 - cur
        return L[cur]

    def tangent(self, net, theta, dtheta, ws):
        if hasattr(net, "sweep_tangent"):
            return net.sweep_tangent(theta, dtheta, ws)
        k = kernels_for(ws.xp)
        p = net.unpack(theta)
        dp = net.unpack(dtheta)
        if _fused_sweeps(net, ws):
            k.tangent_sweep(ws.U, ws.dU, p.residual, dp.residual, ws.S, net.h, net.act, ws.dZ)
            return
        for n in range(net.depth):
            k.tangent_step(ws.U[n], ws.dU[n], p.W[n], dp.W[n], dp.b[n], ws.S[n], net.h,
                           net.act, ws.dZ[n], ws.dU[n + 1], T=ws.tmp)

    def second_order_backward(self, net, theta, dtheta, ws, lam_N, dlam_N, hv_blocks):
        if hasattr(net, "sweep_second_order_backward"):
            return net.sweep_second_order_backward(theta, dtheta, ws, lam_N, dlam_N,
                                                   hv_blocks)
        k = kernels_for(ws.xp)
        p = net.unpack(theta)
        dp = net.unpack(dtheta)
        w = net.width
        hW = hv_blocks[:, : w * w].reshape(net.depth, w, w)
        hb = hv_blocks[:, w * w:]
        L, dL = ws.L, ws.dL
        cur = 0
        if lam_N is not L[0]:
            L[0][...] = lam_N
        if dlam_N is not dL[0]:
            dL[0][...] = dlam_N
        if _fused_sweeps(net, ws) and hv_blocks.flags.c_contiguous:
            cur = k.soadjoint_sweep(L, dL, cur, ws.U, ws.dU, p.residual, dp.residual, ws.S,
                                    ws.dZ, net.h, net.act, ws.D, ws.dD, hv_blocks.reshape(-1))
            return L[cur], dL[cur]
        for n in range(net.depth - 1, -1, -1):
            k.soadjoint_step(L[cur], dL[cur], ws.U[n], ws.dU[n], p.W[n], dp.W[n], ws.S[n],
                             ws.dZ[n], net.h, net.act, ws.D, ws.dD,
                             L=L[1 - cur], dL=dL[1 - cur], dgW=hW[n], dgb=hb[n],
                             tmp=ws.tmp, tmpW=ws.tmpW)
            cur = 1 - cur
        return L[cur], dL[cur]
