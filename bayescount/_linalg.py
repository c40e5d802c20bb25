"""Small dense linear algebra over stacks of matrices (2 x 2 to ~6 x 6), vectorized over the stack.

LAPACK's per-matrix overhead dominates for millions of tiny blocks; a loop over
the few entries with whole-stack arithmetic does not.
"""

from __future__ import annotations

import numba
import numpy as np


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


def forward(L, b):
    """Solve ``L y = b`` for lower-triangular stacks."""
    y = np.empty_like(b)
    for i in range(b.shape[-1]):
        y[..., i] = (b[..., i] - np.sum(L[..., i, :i] * y[..., :i], axis=-1)) / L[..., i, i]
    return y


def backward(L, y):
    """Solve ``L^T x = y`` for lower-triangular stacks."""
    n = y.shape[-1]
    x = np.empty_like(y)
    for i in range(n - 1, -1, -1):
        x[..., i] = (y[..., i] - np.sum(L[..., i + 1 :, i] * x[..., i + 1 :], axis=-1)) / L[..., i, i]
    return x


def spd_inverse(A):
    L = cholesky(A)
    n = A.shape[-1]
    eye = np.broadcast_to(np.eye(n), A.shape)
    cols = [backward(L, forward(L, eye[..., :, j])) for j in range(n)]
    return np.stack(cols, axis=-1)


@numba.njit(cache=True)
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
