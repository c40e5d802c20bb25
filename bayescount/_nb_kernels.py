"""Fused numba kernels for the negative binomial with one log-dispersion per gene.

The MAP path's hot loop is the NB log-density and its derivatives in ``eta``
and the log-dispersion ``d``, over every (gene, observation). pytensor derives
them from :func:`bayescount.parts._nb_kernel_terms` one expression at a time,
so the compiled loop evaluates ``exp``/``sigmoid``/``softplus`` of the same
argument several times and ``exp(-d)`` at every element, though ``d`` is one
number per gene. Here each element takes one ``exp`` and one ``log``; the
gene's own terms (``exp(-d)``, ``lgamma(r)``, ``digamma(r)``, ``trigamma(r)``)
are computed once per row, and the sum of ``lgamma(y + 1)`` once per fit.

With ``s = d + eta``, ``e = exp(s)`` (dispersion x mean), ``r = exp(-d)``,
``L = log1p(e)``, ``i = 1 / (1 + e)`` and ``p = e i``::

    logp        = log_rising(y, r) - lgamma(y + 1) - r L + y (s - L)
    d/deta      = y i - r p                      (= (y - mu) / (1 + e))
    d2/deta2    = -(r + y) p i
    d/dd        = r (L - digamma_rising(y, r)) + d/deta
    d2/deta dd  = -p d/deta
    d2/dd2      = -r (L - digamma_rising) + r p + r^2 trigamma_rising + d2/deta dd

``tests/test_nb_kernels.py`` holds them to the pytensor-derived kernels
(which stay the reference, and the path for every other likelihood, for
weights and for per-level dispersions).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ._kernels import LARGE_R, SHORT, _digamma, _trigamma
from ._kernels import log_rising_given as _log_rising


@numba.njit(cache=True, nogil=True, inline="always")
def _log1p(x):
    # Kahan's log1p from log (1.5 ulp): half the time of libm's log1p, and exact where 1 + x == 1.
    u = 1.0 + x
    if u == 1.0:
        return x
    return math.log(u) * x / (u - 1.0)


#: exp(s) is taken at min(s, S_MAX): beyond it 1 / (1 + e^s) is 0 and e^s / (1 + e^s) is 1 to
#: double precision, and softplus(s) is s.
S_MAX = 700.0


@numba.njit(cache=True, nogil=True, inline="always")
def _softplus(s, e):
    return s if s > S_MAX else _log1p(e)


@numba.njit(cache=True, nogil=True, inline="always")
def _point(s):
    """``(e, i, p)`` at ``s = d + eta``: e^s, 1 / (1 + e^s), e^s / (1 + e^s)."""
    e = math.exp(min(s, S_MAX))
    i = 1.0 / (1.0 + e)
    return e, i, e * i


@numba.njit(cache=True, nogil=True, inline="always")
def _logp(yy, s, L, r, lgr, full):
    """One count's log-density from ``L = softplus(s)``: its eta terms, plus ``log_rising(y, r)`` with ``full``."""
    term = yy * (s - L) - r * L
    if full:
        term += _log_rising(yy, r, lgr)
    return term


@numba.njit(cache=True, nogil=True, inline="always")
def _rising_derivs(y, r, dgr, tgr):
    # _kernels' digamma_rising and trigamma_rising at once, with digamma(r), trigamma(r) given.
    if y <= SHORT and y == math.floor(y):
        dr = 0.0
        tr = 0.0
        for j in range(int(y)):
            z = 1.0 / (r + j)
            dr += z
            tr -= z * z
        return dr, tr
    if r >= LARGE_R:
        x = y + r
        dr = (math.log1p(y / r) + 0.5 * y / (r * x) - (1.0 / (x * x) - 1.0 / (r * r)) / 12.0
              + (1.0 / (x * x * x * x) - 1.0 / (r * r * r * r)) / 120.0)
        tr = (-y / (r * x) + 0.5 * (1.0 / (x * x) - 1.0 / (r * r)) + (1.0 / (x * x * x) - 1.0 / (r * r * r)) / 6.0
              - (1.0 / (x * x * x * x * x) - 1.0 / (r * r * r * r * r)) / 30.0)
        return dr, tr
    return _digamma(y + r) - dgr, _trigamma(y + r) - tgr


@numba.njit(cache=True, nogil=True)
def lgamma_rows(y):
    """Per-row sums of ``lgamma(y + 1)`` (the NB's dispersion-free normalizer), (G,)."""
    G, n = y.shape
    out = np.zeros(G)
    for g in range(G):
        acc = 0.0
        for j in range(n):
            acc += _log_rising(y[g, j], 1.0, 0.0)
        out[g] = acc
    return out


@numba.njit(cache=True, nogil=True)
def nb_eta(y, rows, eta, d, mode, lgy, grp, n_grp):
    """Row sums of the log-density and its first two derivatives in ``eta`` at held ``d``.

    ``y``: the full count matrix, read at ``rows``; ``eta`` (m, n); ``d``
    (m,); ``mode``: 0 no log-density (zeros), 1 the whole of it (``lgy``:
    :func:`lgamma_rows` of ``y``), 2 its eta terms only. The derivatives
    come summed over the observations of each design row: ``grp`` (n,) gives
    an observation's distinct row of the design, ``n_grp`` their number, so
    the gradient and Hessian are ``(m, n_grp)`` products with the distinct
    rows rather than ``(m, n)`` ones with every observation's.
    """
    m, n = eta.shape
    ll = np.zeros(m)
    d1 = np.zeros((m, n_grp))
    d2 = np.zeros((m, n_grp))
    for g in range(m):
        row = rows[g]
        acc = gene_eta(y[row], eta[g], d[g], mode, grp, d1[g], d2[g])
        ll[g] = acc - lgy[row] if mode == 1 else acc
    return ll, d1, d2


@numba.njit(cache=True, nogil=True, inline="always")
def gene_eta(y, eta, d, mode, grp, d1, d2):
    """One gene's :func:`nb_eta`: its derivatives added into ``d1``, ``d2`` (per design row); returns
    the log-density's sum (``mode`` as there; without ``lgamma(y + 1)``)."""
    n = y.size
    r = math.exp(-d)
    lgr = math.lgamma(r) if mode == 1 and r < LARGE_R else 0.0
    acc = 0.0
    for j in range(n):
        yy = y[j]
        s = d + eta[j]
        e, i, p = _point(s)
        k = grp[j]
        d1[k] += yy * i - r * p
        d2[k] -= (r + yy) * p * i
        if mode != 0:
            acc += _logp(yy, s, _softplus(s, e), r, lgr, mode == 1)
    return acc


@numba.njit(cache=True, nogil=True)
def nb_both(y, rows, eta, d, need_ll, lgy, grp, n_grp):
    """Like :func:`nb_eta` with ``d`` differentiated too.

    Returns ``(ll, d_eta, d_d, d_eta2, d_eta_d, d_d2)``: the ``eta``
    derivatives summed per design row (m, n_grp), the others per gene (m,).
    """
    m, n = eta.shape
    ll = np.zeros(m)
    d1e = np.zeros((m, n_grp))
    d1d = np.zeros(m)
    d2ee = np.zeros((m, n_grp))
    d2ed = np.zeros((m, n_grp))
    d2dd = np.zeros(m)
    for g in range(m):
        row = rows[g]
        acc, d1d[g], d2dd[g] = gene_both(y[row], eta[g], d[g], need_ll, grp, d1e[g], d2ee[g], d2ed[g])
        ll[g] = acc - lgy[row] if need_ll else 0.0
    return ll, d1e, d1d, d2ee, d2ed, d2dd


@numba.njit(cache=True, nogil=True, inline="always")
def gene_both(y, eta, d, need_ll, grp, d1e, d2ee, d2ed):
    """One gene's :func:`nb_both`: its eta derivatives added into ``d1e``, ``d2ee``, ``d2ed`` (per
    design row); returns the log-density's sum without ``lgamma(y + 1)`` (0 without ``need_ll``) and
    the first and second derivatives in ``d``."""
    n = y.size
    r = math.exp(-d)
    big = r >= LARGE_R
    lgr = math.lgamma(r) if need_ll and not big else 0.0
    dgr = 0.0 if big else _digamma(r)
    tgr = 0.0 if big else _trigamma(r)
    acc = 0.0
    sd = 0.0
    sdd = 0.0
    for j in range(n):
        yy = y[j]
        s = d + eta[j]
        e, i, p = _point(s)
        L = _softplus(s, e)
        de = yy * i - r * p
        dr, tr = _rising_derivs(yy, r, dgr, tgr)
        ed = -p * de
        k = grp[j]
        d1e[k] += de
        d2ee[k] -= (r + yy) * p * i
        d2ed[k] += ed
        sd += r * (L - dr) + de
        sdd += -r * (L - dr) + r * p + r * r * tr + ed
        if need_ll:
            acc += _logp(yy, s, L, r, lgr, True)
    return acc, sd, sdd


@numba.njit(cache=True, nogil=True, inline="always")
def design_eta(Xd, grp, offset, theta, P, xb, eta):
    """One gene's ``eta = offset + X theta[:P]`` into ``eta``, through the distinct design rows
    ``Xd`` (``grp``: each observation's row; ``xb``: work space, one value a row)."""
    for r in range(Xd.shape[0]):
        acc = 0.0
        for p in range(P):
            acc += Xd[r, p] * theta[p]
        xb[r] = acc
    for j in range(offset.size):
        eta[j] = offset[j] + xb[grp[j]]


@numba.njit(cache=True, nogil=True, inline="always")
def gene_value(y, eta, d, lgy):
    """One gene's log-density sum (:func:`nb_value` of a row)."""
    n = y.size
    r = math.exp(-d)
    lgr = math.lgamma(r) if r < LARGE_R else 0.0
    acc = 0.0
    for j in range(n):
        s = d + eta[j]
        acc += _logp(y[j], s, _softplus(s, math.exp(min(s, S_MAX))), r, lgr, True)
    return acc - lgy


@numba.njit(cache=True, nogil=True)
def nb_value(y, rows, eta, d, lgy):
    """Row sums of the log-density, (m,)."""
    out = np.empty(rows.size)
    for g in range(rows.size):
        out[g] = gene_value(y[rows[g]], eta[g], d[g], lgy[rows[g]])
    return out


@numba.njit(cache=True, nogil=True)
def nb_normalizer(y, rows, d, lgy):
    """Row sums of the eta-free terms ``log_rising(y, r) - lgamma(y + 1)``, (m,)."""
    out = np.empty(rows.size)
    for g in range(rows.size):
        row = rows[g]
        r = math.exp(-d[g])
        lgr = math.lgamma(r) if r < LARGE_R else 0.0
        acc = 0.0
        for j in range(y.shape[1]):
            acc += _log_rising(y[row, j], r, lgr)
        out[g] = acc - lgy[row]
    return out
