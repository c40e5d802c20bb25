"""Damped Newton for the NB with one log-dispersion per gene, one gene at a time in compiled code.

:func:`bayescount.newton.newton` runs the same algorithm over a stack of
genes with numpy, a few dozen whole-stack calls per iteration around the
fused kernels of :mod:`bayescount._nb_kernels`. Those calls hold the
interpreter between them, so two threads of gene chunks waited on each other
(the MAP path's weak fits ran 1.2x faster on 2 cores, not 2x), and at 2,000
genes they cost more than the kernels. Here each gene takes its iterations in
one compiled loop that releases the interpreter: the same steps, line search,
stopping rules and curvature outputs (``tests/test_nb_kernels.py`` holds the
two to each other).
"""

from __future__ import annotations

import numba
import numpy as np

from ._linalg import chol_solve_into
from ._nb_kernels import design_eta, gene_both, gene_value


@numba.njit(cache=True, nogil=True)
def _derivs(y, Xd, grp, offset, lgy, theta, loc, scale, need_ll, xb, eta, d1e, d2ee, d2ed, g, H):
    """One gene's log-likelihood (NaN without ``need_ll``); the log posterior's gradient and Hessian go to g, H."""
    K = theta.size
    P = K - 1
    R = Xd.shape[0]
    design_eta(Xd, grp, offset, theta, P, xb, eta)
    d1e[:] = 0.0
    d2ee[:] = 0.0
    d2ed[:] = 0.0
    acc, sd, sdd = gene_both(y, eta, theta[P], need_ll, grp, d1e, d2ee, d2ed)
    for p in range(P):
        a, c = 0.0, 0.0
        for r in range(R):
            a += d1e[r] * Xd[r, p]
            c += d2ed[r] * Xd[r, p]
        g[p] = a
        H[p, P] = c
        H[P, p] = c
        for q in range(p + 1):
            h = 0.0
            for r in range(R):
                h += d2ee[r] * Xd[r, p] * Xd[r, q]
            H[p, q] = h
            H[q, p] = h
    g[P] = sd
    H[P, P] = sdd
    for i in range(K):
        prec = 1.0 / (scale[i] * scale[i])
        g[i] -= (theta[i] - loc[i]) * prec
        H[i, i] -= prec
    return acc - lgy if need_ll else np.nan


@numba.njit(cache=True, nogil=True)
def _logpost(y, Xd, grp, offset, lgy, theta, loc, scale, xb, eta):
    design_eta(Xd, grp, offset, theta, theta.size - 1, xb, eta)
    return gene_value(y, eta, theta[theta.size - 1], lgy) - 0.5 * _sq(theta, loc, scale)


@numba.njit(cache=True, nogil=True, inline="always")
def _sq(theta, loc, scale):
    acc = 0.0
    for i in range(theta.size):
        z = (theta[i] - loc[i]) / scale[i]
        acc += z * z
    return acc


@numba.njit(cache=True, nogil=True, inline="always")
def _finite(f, g, H):
    if not np.isfinite(f):
        return False
    for i in range(g.size):
        if not np.isfinite(g[i]):
            return False
        for k in range(g.size):
            if not np.isfinite(H[i, k]):
                return False
    return True


@numba.njit(cache=True, nogil=True, inline="always")
def _solve(A, g, L, step):
    # Cholesky of A and A^-1 g into step; whether A is (safely) positive definite.
    chol_solve_into(A, g, L, step)
    ok = True
    for i in range(g.size):
        if not (np.isfinite(L[i, i]) and L[i, i] > 1e-4):
            ok = False
    return ok


@numba.njit(cache=True, nogil=True)
def nb_newton(y, rows, Xd, grp, offset, lgy, theta, loc, scale, tol, max_iter, max_step, curvature,
              converged, n_iter, H_out, ll_out):  # pragma: no cover - compiled
    """:func:`bayescount.newton.newton` for genes ``rows`` of the fused NB; ``theta`` updated in place.

    ``y``, ``lgy``, ``theta``, ``loc``, ``scale`` are indexed by gene;
    ``converged``, ``n_iter``, ``H_out`` and ``ll_out`` are written at
    ``rows`` (the last two with ``curvature``).
    """
    K = theta.shape[1]
    R = Xd.shape[0]
    n = offset.size
    xb = np.empty(R)
    eta = np.empty(n)
    d1e = np.empty(R)
    d2ee = np.empty(R)
    d2ed = np.empty(R)
    g = np.empty(K)
    H = np.empty((K, K))
    g1 = np.empty(K)
    H1 = np.empty((K, K))
    A = np.empty((K, K))
    L = np.empty((K, K))
    step = np.empty(K)
    th = np.empty(K)
    cand = np.empty(K)
    for gi in range(rows.size):
        row = rows[gi]
        yr, lo, sc = y[row], loc[row], scale[row]
        th[:] = theta[row]
        f0 = 0.0
        ll_cur = np.nan
        have = False
        fresh = False
        for it in range(max_iter):
            if it == 0:
                ll_cur = _derivs(yr, Xd, grp, offset, lgy[row], th, lo, sc, True, xb, eta, d1e, d2ee, d2ed, g, H)
                f0 = ll_cur - 0.5 * _sq(th, lo, sc)
            elif not have:
                _derivs(yr, Xd, grp, offset, lgy[row], th, lo, sc, False, xb, eta, d1e, d2ee, d2ed, g, H)
                ll_cur = np.nan
            have = True
            if not _finite(f0, g, H):
                # Derivatives that overflow: the gene stops where it is, unconverged.
                n_iter[row] += 1
                break
            for i in range(K):
                for k in range(K):
                    A[i, k] = -H[i, k]
            if not _solve(A, g, L, step):
                # Levenberg-style shift where the Hessian is not (safely) negative definite.
                min_eig = np.linalg.eigvalsh(A)[0]
                shift = 1e-6 - min_eig + 1e-3 * abs(min_eig) if min_eig < 1e-8 else 0.0
                for i in range(K):
                    A[i, i] += shift
                _solve(A, g, L, step)
            big = 0.0
            for i in range(K):
                big = max(big, abs(step[i]))
            cap = min(1.0, max_step / max(big, 1e-300))
            decrement = 0.0
            for i in range(K):
                step[i] *= cap
                decrement += g[i] * step[i]
            t = 1.0
            accepted = False
            if decrement < tol:
                # At the mode: the last tiny step is taken whole, and the curvature and the
                # log-likelihood there follow from this pass and its quadratic model.
                gain = 0.0
                for i in range(K):
                    cand[i] = th[i] + step[i]
                    gain += g[i] * step[i]
                    for k in range(K):
                        gain += 0.5 * step[i] * H[i, k] * step[k]
                if curvature:
                    H_out[row] = H
                    ll_out[row] = f0 + gain + 0.5 * _sq(cand, lo, sc)
                    fresh = True
                th[:] = cand
                accepted = True
                have = False
            else:
                # The full step, with the derivatives there.
                for i in range(K):
                    cand[i] = th[i] + step[i]
                ll1 = _derivs(yr, Xd, grp, offset, lgy[row], cand, lo, sc, True, xb, eta, d1e, d2ee, d2ed, g1, H1)
                f1 = ll1 - 0.5 * _sq(cand, lo, sc)
                if np.isfinite(f1) and f1 >= f0 + 1e-4 * decrement - 1e-12 * abs(f0):
                    th[:] = cand
                    f0, ll_cur = f1, ll1
                    g[:] = g1
                    H[:, :] = H1
                    accepted = True
                else:
                    t = 0.5
                    for _half in range(29):
                        for i in range(K):
                            cand[i] = th[i] + t * step[i]
                        f1 = _logpost(yr, Xd, grp, offset, lgy[row], cand, lo, sc, xb, eta)
                        if np.isfinite(f1) and f1 >= f0 + 1e-4 * t * decrement - 1e-12 * abs(f0):
                            th[:] = cand
                            f0 = f1
                            have = False
                            accepted = True
                            break
                        t *= 0.5
            n_iter[row] += 1
            moved = 0.0
            for i in range(K):
                moved = max(moved, abs(t * step[i]))
            if decrement < tol or moved < 1e-7 or not accepted:
                converged[row] = accepted or decrement < 1e-6
                break
        theta[row] = th
        if curvature and not fresh:
            if have and np.isfinite(ll_cur):
                H_out[row] = H
                ll_out[row] = ll_cur
            else:
                ll_out[row] = _derivs(yr, Xd, grp, offset, lgy[row], th, lo, sc, True, xb, eta, d1e, d2ee, d2ed,
                                      g, H)
                H_out[row] = H
