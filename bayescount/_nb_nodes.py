"""The dispersion quadrature's node fits for the fused NB, one gene at a time in compiled code.

:func:`bayescount.quadrature.dispersion_nodes` fits the coefficients at
each log-dispersion node with whole-stack numpy calls around the fused
kernels; this module makes the same fits gene by gene (one Newton step from
the node's Gaussian conditional mean, safeguarded steps where the quadratic
model promises more than ``TRUST_GAIN``, and the null's evidence gap), so
that gene chunks on threads do not wait on each other for the interpreter.
``tests/test_nb_kernels.py`` holds the two to each other.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ._linalg import chol_solve_into
from ._nb_kernels import design_eta, gene_eta, gene_value

_LOG2PI = math.log(2.0 * math.pi)


@numba.njit(cache=True, nogil=True, inline="always")
def _log_normal(x, loc, scale):
    z = (x - loc) / scale
    return -0.5 * z * z - math.log(scale) - 0.5 * _LOG2PI


@numba.njit(cache=True, nogil=True)
def _block_derivs(y, Xd, grp, offset, lgy, th, loc, scale, blk, xb, eta, d1, d2, g, A):
    """Log-likelihood at ``th`` (log-dispersion held), and the block ``blk``'s log-posterior gradient and ``-H``."""
    P = Xd.shape[1]
    R = Xd.shape[0]
    design_eta(Xd, grp, offset, th, P, xb, eta)
    d1[:] = 0.0
    d2[:] = 0.0
    ll = gene_eta(y, eta, th[P], 1, grp, d1, d2) - lgy
    m = blk.size
    for a in range(m):
        p = blk[a]
        acc = 0.0
        for r in range(R):
            acc += d1[r] * Xd[r, p]
        prec = 1.0 / (scale[p] * scale[p])
        g[a] = acc - (th[p] - loc[p]) * prec
        for b in range(a + 1):
            q = blk[b]
            h = 0.0
            for r in range(R):
                h += d2[r] * Xd[r, p] * Xd[r, q]
            A[a, b] = -h
            A[b, a] = -h
        A[a, a] += prec
    return ll


@numba.njit(cache=True, nogil=True)
def _value(y, Xd, grp, offset, lgy, th, xb, eta):
    P = Xd.shape[1]
    design_eta(Xd, grp, offset, th, P, xb, eta)
    return gene_value(y, eta, th[P], lgy)


@numba.njit(cache=True, nogil=True)
def _chol_step(A, g, L, step, m):
    # Cholesky of A[:m, :m] into L and A^-1 g into step (0 where not finite).
    chol_solve_into(A[:m, :m], g[:m], L[:m, :m], step[:m])
    finite = True
    for i in range(m):
        finite &= np.isfinite(step[i])
    if not finite:
        step[:m] = 0.0


@numba.njit(cache=True, nogil=True)
def _block_fit(y, Xd, grp, offset, lgy, th, loc, scale, blk, trust, max_extra, max_step, w):
    """One Newton step on the block ``blk`` of ``th`` (the rest held), safeguarded where it promises too much.

    ``th`` is moved in place by the safeguarded steps; returns the log
    density of the block's quadratic model at its step (``f``) and ``log det
    A``, with ``w.g``, ``w.A``, ``w.step`` at the last pass.
    """
    xb, eta, d1, d2, g, A, L, step, cand = w
    m = blk.size
    ll = _block_derivs(y, Xd, grp, offset, lgy, th, loc, scale, blk, xb, eta, d1, d2, g, A)
    _chol_step(A, g, L, step, m)
    for _ in range(max_extra):
        gain = 0.0
        for a in range(m):
            gain += g[a] * step[a]
        gain *= 0.5
        if not (np.isfinite(gain) and gain > trust):
            break
        # Halve the step (at most max_step per coordinate) until the block's log posterior rises.
        big = 0.0
        for a in range(m):
            big = max(big, abs(step[a]))
        cap = min(1.0, max_step / max(big, 1e-300))
        f0 = ll
        for a in range(m):
            f0 += _log_normal(th[blk[a]], loc[blk[a]], scale[blk[a]])
        t = 1.0
        moved = False
        for _half in range(30):
            cand[:] = th
            f1 = 0.0
            for a in range(m):
                cand[blk[a]] += t * cap * step[a]
                f1 += _log_normal(cand[blk[a]], loc[blk[a]], scale[blk[a]])
            f1 += _value(y, Xd, grp, offset, lgy, cand, xb, eta)
            if np.isfinite(f1) and f1 > f0:
                th[:] = cand
                moved = True
                break
            t *= 0.5
        if not moved:
            break  # the pass would repeat itself
        ll = _block_derivs(y, Xd, grp, offset, lgy, th, loc, scale, blk, xb, eta, d1, d2, g, A)
        _chol_step(A, g, L, step, m)
    logdet = 0.0
    f = ll
    for a in range(m):
        logdet += 2.0 * math.log(L[a, a]) if L[a, a] > 0.0 else np.nan
        f += _log_normal(th[blk[a]], loc[blk[a]], scale[blk[a]]) + 0.5 * g[a] * step[a]
    return f, logdet


@numba.njit(cache=True, nogil=True)
def nb_nodes(y, Xd, grp, offset, lgy, theta, loc, scale, d, slope, sd_q, log_w, near, is_slope, trust, max_extra,
             max_step, base, b, prec, gap):  # pragma: no cover - compiled
    """Every gene's node table (:func:`bayescount.quadrature.dispersion_nodes`, fused NB), written in place.

    ``d`` (G, N): the log-dispersion nodes; ``slope`` (G, P): the
    coefficients' Gaussian conditional slopes on it; ``log_w`` (N,): log
    Gauss-Hermite weights over sqrt(pi); ``near`` (G,): genes that carry the
    null's evidence gap (``gap`` (G, N)), ``is_slope`` (P,): the slopes it
    sets to zero.
    """
    G, N = d.shape
    K = theta.shape[1]
    P = K - 1
    R = Xd.shape[0]
    w = (np.empty(R), np.empty(offset.size), np.empty(R), np.empty(R), np.empty(P), np.empty((P, P)),
         np.empty((P, P)), np.empty(P), np.empty(K))
    full = np.arange(P)
    n_slope = 0
    for p in range(P):
        n_slope += is_slope[p]
    rest = np.empty(P - n_slope, dtype=np.int64)
    slopes = np.empty(n_slope, dtype=np.int64)
    a = 0
    c = 0
    for p in range(P):
        if is_slope[p]:
            slopes[c] = p
            c += 1
        else:
            rest[a] = p
            a += 1
    th = np.empty(K)
    th0 = np.empty(K)
    x = np.empty(P)
    Arr = np.empty((P, P))
    Lrr = np.empty((P, P))
    rhs = np.empty(P)
    sol = np.empty(P)
    for gi in range(G):
        for i in range(N):
            th[:] = theta[gi]
            step_d = d[gi, i] - theta[gi, P]
            th[P] = d[gi, i]
            for p in range(P):
                th[p] += slope[gi, p] * step_d
            f, logdet = _block_fit(y[gi], Xd, grp, offset, lgy[gi], th, loc[gi], scale[gi], full, trust, max_extra,
                                   max_step, w)
            A, step = w[5], w[7]
            for p in range(P):
                b[gi, i, p] = th[p] + step[p]
                for q in range(P):
                    prec[gi, i, p, q] = A[p, q]
            if near[gi]:
                gap[gi, i] = _null_gap(y[gi], Xd, grp, offset, lgy[gi], th, loc[gi], scale[gi], b[gi, i], f, A,
                                       rest, slopes, trust, max_extra, max_step, w, th0, x, Arr, Lrr, rhs, sol)
            log_q = _log_normal(d[gi, i], theta[gi, P], sd_q[gi])
            base[gi, i] = f + 0.5 * P * _LOG2PI - 0.5 * logdet - log_q + log_w[i]


@numba.njit(cache=True, nogil=True)
def _null_gap(y, Xd, grp, offset, lgy, th, loc, scale, bb, f, A, rest, slopes, trust, max_extra, max_step, w,
              th0, x, Arr, Lrr, rhs, sol):
    # quadrature._null_gap for one gene at one node: the exact minus the Gaussian model's log
    # density of the block at its slopes' zero (the rest re-fitted there), 0 where that fails.
    P = bb.size
    nr, ns = rest.size, slopes.size
    for a in range(nr):
        acc = 0.0
        for c in range(ns):
            acc += A[rest[a], slopes[c]] * bb[slopes[c]]
        rhs[a] = acc
        for k in range(nr):
            Arr[a, k] = A[rest[a], rest[k]]
    chol_solve_into(Arr[:nr, :nr], rhs[:nr], Lrr[:nr, :nr], sol[:nr])
    x[:] = bb
    for a in range(nr):
        x[rest[a]] += sol[a]
    for c in range(ns):
        x[slopes[c]] = 0.0
    quad = 0.0
    for p in range(P):
        for q in range(P):
            quad += (x[p] - bb[p]) * A[p, q] * (x[q] - bb[q])
    model = f - 0.5 * quad
    ok = np.isfinite(model)
    for p in range(P):
        ok &= np.isfinite(x[p])
    th0[:] = th
    for p in range(P):
        th0[p] = x[p] if ok else bb[p]
    f_r, _ = _block_fit(y, Xd, grp, offset, lgy, th0, loc, scale, rest, trust, max_extra, max_step, w)
    exact = f_r
    for c in range(ns):
        exact += _log_normal(0.0, loc[slopes[c]], scale[slopes[c]])
    gap = exact - model
    return gap if ok and np.isfinite(gap) else 0.0
