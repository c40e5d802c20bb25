"""Small dense linear algebra over stacks of matrices (2 x 2 to ~6 x 6), vectorized over the stack.

LAPACK's per-matrix overhead dominates for millions of tiny blocks; a loop over
the few entries with whole-stack arithmetic does not.
"""

from __future__ import annotations

import functools

import numba
import numpy as np
from threadpoolctl import threadpool_limits


def one_blas_thread(func):
    """Run ``func`` with BLAS limited to one thread.

    The per-gene solves multiply (genes x samples) by (samples x a few)
    matrices: too thin for BLAS threads to share, which then only spin. At
    20,000 x 12 on 2 cores the MAP fit used ~50% more CPU time with them and
    ran no faster. (threadpoolctl comes with PyMC.)
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas"):
            return func(*args, **kwargs)

    return wrapper


def cholesky(A):
    """Lower Cholesky factors of a stack of small SPD matrices, vectorized over the stack.

    LAPACK's per-matrix overhead dominates for millions of 2 x 2 or 3 x 3
    blocks; a loop over the few entries with whole-stack arithmetic does not.
    """
    n = A.shape[-1]
    L = np.zeros_like(A)
    for j in range(n):
        s = A[..., j, j] - np.sum(L[..., j, :j] ** 2, axis=-1)
        L[..., j, j] = np.sqrt(s)
        for i in range(j + 1, n):
            L[..., i, j] = (A[..., i, j] - np.sum(L[..., i, :j] * L[..., j, :j], axis=-1)) / L[..., j, j]
    return L


def chol_solve(A, b):
    """Lower Cholesky factors ``L`` of a stack of small SPD matrices and the solutions of ``A x = b``.

    One compiled pass per matrix (stacked numpy triangular solves made a dozen
    temporaries each); NaN in ``L`` and ``x``
    where a matrix is not positive definite. Returns ``(L, x)``.

    Examples
    --------
    >>> A = np.array([[[4.0, 2.0], [2.0, 3.0]]])
    >>> L, x = chol_solve(A, np.array([[2.0, 1.0]]))
    >>> np.allclose(A[0] @ x[0], [2.0, 1.0]), np.allclose(L[0] @ L[0].T, A[0])
    (True, True)
    """
    n = A.shape[-1]
    flat_A = np.ascontiguousarray(A, dtype=np.float64).reshape(-1, n, n)
    flat_b = np.ascontiguousarray(b, dtype=np.float64).reshape(-1, n)
    L = np.zeros_like(flat_A)
    x = np.empty_like(flat_b)
    _chol_solve_kernel(flat_A, flat_b, L, x)
    return L.reshape(A.shape), x.reshape(b.shape)


@numba.njit(cache=True, nogil=True)
def _chol_solve_kernel(A, b, L, x):  # pragma: no cover - compiled
    for m in range(A.shape[0]):
        chol_solve_into(A[m], b[m], L[m], x[m])


@numba.njit(cache=True, nogil=True)
def chol_solve_into(A, b, L, x):  # pragma: no cover - compiled
    """One small SPD matrix's lower Cholesky factor into ``L`` (zeroed first) and ``A^-1 b`` into ``x``.

    NaN where ``A`` is not positive definite. For compiled kernels that loop
    over their blocks themselves (leading blocks as views: ``A[:m, :m]``).
    """
    P = A.shape[0]
    L[:, :] = 0.0
    chol_into(A, L)
    for i in range(P):
        acc = b[i]
        for k in range(i):
            acc -= L[i, k] * x[k]
        x[i] = acc / L[i, i]
    for i in range(P - 1, -1, -1):
        acc = x[i]
        for k in range(i + 1, P):
            acc -= L[k, i] * x[k]
        x[i] = acc / L[i, i]


def spd_inverse(A):
    """Inverses of a stack of small SPD matrices (NaN where one is not positive definite)."""
    n = A.shape[-1]
    flat = np.ascontiguousarray(A, dtype=np.float64).reshape(-1, n, n)
    out = np.empty_like(flat)
    _spd_inverse_kernel(flat, out)
    return out.reshape(A.shape)


@numba.njit(cache=True, nogil=True)
def _spd_inverse_kernel(A, out):  # pragma: no cover - compiled
    # Per matrix: Cholesky, L^-1 by forward substitution, then L^-T L^-1.
    M, P = A.shape[0], A.shape[1]
    L = np.zeros((P, P))
    Li = np.zeros((P, P))
    for m in range(M):
        chol_into(A[m], L)
        inverse_from_chol(L, Li, out[m])


@numba.njit(cache=True, nogil=True)
def inverse_from_chol(L, Li, out):  # pragma: no cover - compiled
    """``out = (L L^T)^-1`` from a lower Cholesky factor ``L`` (``Li`` is work space for ``L^-1``).

    NaN in ``L`` (a matrix that was not positive definite) gives NaN.
    """
    P = L.shape[0]
    for j in range(P):
        for i in range(P):
            if i < j:
                Li[i, j] = 0.0
                continue
            acc = 1.0 if i == j else 0.0
            for k in range(j, i):
                acc -= L[i, k] * Li[k, j]
            Li[i, j] = acc / L[i, i]
    for i in range(P):
        for j in range(i + 1):
            acc = 0.0
            for k in range(i, P):
                acc += Li[k, i] * Li[k, j]
            out[i, j] = acc
            out[j, i] = acc


@numba.njit(cache=True, nogil=True)
def chol_into(A, L):  # pragma: no cover - compiled
    """Lower Cholesky factor of one small SPD matrix ``A`` into ``L`` (upper triangle left as is).

    Returns ``log det A``; NaN where ``A`` is not positive definite. For
    compiled kernels that loop over the blocks themselves.
    """
    P = A.shape[0]
    logdet = 0.0
    for j in range(P):
        s = A[j, j]
        for k in range(j):
            s -= L[j, k] * L[j, k]
        d = np.sqrt(s) if s > 0.0 else np.nan
        L[j, j] = d
        logdet += 2.0 * np.log(d)
        for i in range(j + 1, P):
            acc = A[i, j]
            for k in range(j):
                acc -= L[i, k] * L[j, k]
            L[i, j] = acc / d
    return logdet
