"""Posterior summaries shared by every fit path: lfsr, s-values, HDIs, BH."""

from __future__ import annotations

import logging
import math

import numba
import numpy as np
from scipy import special, stats

from ._threads import gene_blocks, resolve_threads, run_chunks

log = logging.getLogger(__name__)


def lfsr_from_draws(draws: np.ndarray, axis: int = 0, null_prob: np.ndarray | None = None) -> np.ndarray:
    """Local false sign rate: ``min(P(x >= 0), P(x <= 0))`` along ``axis``.

    Examples
    --------
    >>> import numpy as np
    >>> float(lfsr_from_draws(np.array([1.0, 2.0, -1.0, 3.0])))
    0.25
    """
    if null_prob is None:
        return np.minimum((draws >= 0).mean(axis=axis), (draws <= 0).mean(axis=axis))
    # Rao-Blackwellized: each draw is "null" with probability null_prob, else signed.
    keep = 1.0 - null_prob
    return np.minimum((null_prob + keep * (draws >= 0)).mean(axis=axis), (null_prob + keep * (draws <= 0)).mean(axis=axis))



def logsumexp(a: np.ndarray, axis) -> np.ndarray:
    """``log(sum(exp(a)))`` along ``axis`` for real arrays, ``-inf`` where every term is ``-inf``.

    A lean stand-in for :func:`scipy.special.logsumexp` (no weights, signs or
    complex input), which costs several times more on the MAP path's
    (gene, node, component) tables.

    Examples
    --------
    >>> float(logsumexp(np.log(np.array([1.0, 2.0, 3.0])), axis=0)).__round__(6)
    1.791759
    """
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True)) + m
    return np.squeeze(out, axis=axis)


def logsumexp_nodes(base, log_ratio):
    """``logsumexp_n(base[g, n] + log_ratio[g, n, c])``, (G, C): each component's evidence over the nodes.

    One compiled pass over the MAP path's (gene, node, component) table
    instead of numpy's temporaries; ``-inf`` where every term is.

    Examples
    --------
    >>> lr = np.log(np.array([[[1.0, 2.0], [3.0, 4.0]]]))
    >>> np.round(np.exp(logsumexp_nodes(np.zeros((1, 2)), lr)), 6).tolist()
    [[4.0, 6.0]]
    """
    out = np.empty((log_ratio.shape[0], log_ratio.shape[2]))
    _lse_nodes(np.ascontiguousarray(base, dtype=float), np.ascontiguousarray(log_ratio, dtype=float), out)
    return out


def logsumexp_components(log_pi, log_ratio):
    """``logsumexp_c(log_pi[c] + log_ratio[g, n, c])``, (G, N): each node's evidence under mixture weights ``pi``.

    Examples
    --------
    >>> lr = np.log(np.array([[[1.0, 2.0], [3.0, 4.0]]]))
    >>> np.round(np.exp(logsumexp_components(np.log([0.5, 0.5]), lr)), 6).tolist()
    [[1.5, 3.5]]
    """
    out = np.empty(log_ratio.shape[:2])
    _lse_components(np.ascontiguousarray(log_pi, dtype=float), np.ascontiguousarray(log_ratio, dtype=float), out)
    return out


@numba.njit(cache=True, nogil=True)
def _lse_nodes(base, lr, out):  # pragma: no cover - compiled
    # logsumexp's own steps (max, shift, sum, log), per (gene, component), without temporaries.
    G, N, C = lr.shape
    m = np.empty(C)
    acc = np.empty(C)
    for g in range(G):
        m[:] = -np.inf
        for n in range(N):
            for c in range(C):
                v = base[g, n] + lr[g, n, c]
                if v > m[c]:
                    m[c] = v
        for c in range(C):
            if not np.isfinite(m[c]):
                m[c] = 0.0
        acc[:] = 0.0
        for n in range(N):
            for c in range(C):
                acc[c] += np.exp(base[g, n] + lr[g, n, c] - m[c])
        for c in range(C):
            out[g, c] = np.log(acc[c]) + m[c]


@numba.njit(cache=True, nogil=True)
def _lse_components(log_pi, lr, out):  # pragma: no cover - compiled
    G, N, C = lr.shape
    for g in range(G):
        for n in range(N):
            m = -np.inf
            for c in range(C):
                v = log_pi[c] + lr[g, n, c]
                if v > m:
                    m = v
            if not np.isfinite(m):
                m = 0.0
            acc = 0.0
            for c in range(C):
                acc += np.exp(log_pi[c] + lr[g, n, c] - m)
            out[g, n] = np.log(acc) + m


def svalue(lfsr: np.ndarray) -> np.ndarray:
    """s-values (Stephens 2017): the mean lfsr of all genes at least as significant.

    Calling every gene with ``svalue < t`` keeps the expected false sign rate among calls below t.

    Examples
    --------
    >>> svalue(np.array([0.01, 0.3, 0.03]))
    array([0.01      , 0.11333333, 0.02      ])
    """
    lfsr = np.asarray(lfsr, dtype=float)
    order = np.argsort(lfsr, kind="stable")
    cummean = np.cumsum(lfsr[order]) / np.arange(1, lfsr.size + 1)
    out = np.empty_like(lfsr)
    out[order] = cummean
    return out


def hdi_from_draws(draws: np.ndarray, prob: float) -> tuple[np.ndarray, np.ndarray]:
    """Highest-density interval along axis 0 of ``(n_draws, ...)`` draws (arviz-stats)."""
    from arviz_stats.base import array_stats

    out = array_stats.hdi(np.moveaxis(draws, 0, -1), prob=prob, axis=-1)
    return out[..., 0], out[..., 1]



def prior_df(sigma: float) -> float:
    """Prior degrees of freedom equivalent to a log-normal scatter ``sigma`` of variances.

    ``log(s^2)`` of a scaled chi-square with ``d`` degrees of freedom has
    variance ``trigamma(d / 2)`` (limma's moment match), so a log-dispersion
    prior of sd ``sigma`` counts as ``d`` with ``trigamma(d / 2) = sigma^2``
    extra observations of the variance.

    Examples
    --------
    >>> round(prior_df(0.5), 2)
    8.96
    """
    from scipy import optimize, special

    if not np.isfinite(sigma) or sigma <= 0:
        return np.inf
    f = lambda logd: float(special.polygamma(1, np.exp(logd) / 2.0)) - sigma**2  # noqa: E731
    if f(np.log(1e8)) > 0:  # a scatter this small is a known dispersion
        return np.inf
    return float(np.exp(optimize.brentq(f, np.log(1e-8), np.log(1e8), xtol=1e-10)))


def bh_adjust(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values."""
    return stats.false_discovery_control(np.asarray(pvalues, dtype=float), method="bh")


def mixture_weights(xhat, s2, mask, grid, concentration, pi0=None, max_iter=500, tol=1e-12, loglik=None):
    """Mixture weights of a gene-level scale mixture by penalized maximum likelihood (ash's estimator).

    Each gene's coefficients share one component ``k``: the marginal of the
    Gaussian likelihood summaries is ``prod_j N(xhat_gj; 0, grid_k^2 + s2_gj)``
    over the coordinates with ``mask``; the Dirichlet ``concentration`` acts as
    pseudo-counts (a null weight above 1 favours the smallest scale). A
    precomputed (gene, component) ``loglik`` (e.g. Laplace evidences) replaces
    the Gaussian summaries; ``-inf`` marks components not evaluated for a gene.

    The criterion is concave in the weights, so it is maximized over the
    simplex directly (SLSQP, as ash's mixsqp does with its own SQP). Plain EM
    crawls when neighbouring scales are nearly interchangeable: stopped after
    a few hundred steps it leaves weight on the wrong scales, which
    mis-states every lfsr.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = np.r_[rng.normal(0, 0.1, 900), rng.normal(0, 2.0, 100)][:, None]
    >>> pi = mixture_weights(x, np.full_like(x, 0.01), np.ones_like(x), np.array([0.01, 2.0]), np.ones(2))
    >>> np.round(pi, 1)
    array([0.9, 0.1])
    """
    from scipy import optimize

    if loglik is None:
        loglik = component_loglik(xhat, s2, mask, grid)
        keep = mask.any(axis=1)
    else:
        keep = np.isfinite(loglik).any(axis=1)
    loglik = loglik[keep]
    K = grid.size
    a = np.asarray(concentration, dtype=float) - 1.0
    start = np.full(K, 1.0 / K) if pi0 is None else np.asarray(pi0, float)
    n = loglik.shape[0]
    if n == 0:
        return np.maximum(a, 0.0) / max(np.maximum(a, 0.0).sum(), 1e-300) if a.max() > 0 else start
    # Likelihood ratios to each gene's best component keep exp() in range.
    lik = np.exp(loglik - loglik.max(axis=1, keepdims=True))

    def objective(p):
        m = np.maximum(lik @ p, 1e-300)
        pp = np.maximum(p, 1e-300)
        value = -(np.log(m).sum() + np.sum(a * np.log(pp))) / n
        grad = -(lik.T @ (1.0 / m) + a / pp) / n
        return value, grad

    bounds = [(1e-10 if ak > 0 else 0.0, 1.0) for ak in a]
    res = optimize.minimize(objective, np.clip(start, 1e-6, None) / np.clip(start, 1e-6, None).sum(), jac=True,
                            method="SLSQP", bounds=bounds,
                            constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1.0, "jac": lambda p: np.ones_like(p)}],
                            options={"ftol": tol, "maxiter": max_iter})
    pi = np.maximum(res.x, 0.0)
    pi /= pi.sum()
    if not res.success:
        log.warning("mixture-weight optimizer stopped early (%s); keeping the better of its result and the start",
                    res.message)
    if objective(pi)[0] > objective(start)[0]:
        # SLSQP can end a hair below its start when the optimum sits on the simplex's edge.
        pi = start
    return pi


def component_loglik(xhat, s2, mask, grid):
    """``sum_j mask_gj log N(xhat_gj; 0, grid_k^2 + s2_gj)`` as a (gene, component) array."""
    var = grid[None, None, :] ** 2 + s2[:, :, None]
    ll = -0.5 * (xhat[:, :, None] ** 2 / var + np.log(2 * np.pi * var))
    return np.sum(mask[:, :, None] * ll, axis=1)


def mixture_summary(weights, mean, sd, prob: float, n_grid: int = 256, null_component=None, groups=None,
                    n_threads: int | None = None):
    """Mean, sd, lfsr and HDI of per-gene mixtures of normals.

    Parameters
    ----------
    weights, mean, sd : numpy.ndarray
        ``(n_genes, n_components)``.
    prob : float
        HDI probability. The HDI is the highest-density set on a fine grid; for
        a multimodal mixture its hull is returned.
    null_component : boolean array, optional
        ``(n_genes, n_components)`` or ``(n_components,)``: the components that
        stand for "no effect" (ash's point mass); their weight counts as an
        error for either sign in the lfsr.
    groups : integer array, optional
        ``(n_genes, n_components)`` labels: for the HDI only, components with the
        same label are merged into one normal by moments (e.g. one LFC-prior
        component at several dispersion nodes, whose means and sds barely differ).
    n_threads : int, optional
        Threads for the HDIs (default :func:`~bayescount._threads.default_threads`).

    Returns
    -------
    mean, sd, lfsr, hdi_low, hdi_high : numpy.ndarray
    """
    G = weights.shape[0]
    null = None if null_component is None else np.broadcast_to(np.asarray(null_component, dtype=bool), weights.shape)
    groups = None if groups is None else np.broadcast_to(groups, weights.shape)
    labels = None if groups is None else np.unique(groups)
    out = np.empty((5, G))

    def block(sl):
        # Blocks of genes keep the work arrays in cache, and run on threads.
        out[:, sl] = _summary_block(weights[sl], mean[sl], sd[sl], prob, n_grid,
                                    None if null is None else null[sl], None if groups is None else groups[sl], labels)

    run_chunks(block, gene_blocks(G, 2048), resolve_threads(n_threads))
    return out[0], out[1], out[2], out[3], out[4]


def _summary_block(weights, mean, sd, prob, n_grid, is_null, groups, labels):
    """:func:`mixture_summary` of a block of genes: (mean, sd, lfsr, hdi_low, hdi_high) stacked."""
    w = weights / weights.sum(axis=1, keepdims=True)
    m = np.sum(w * mean, axis=1)
    var = np.sum(w * (sd**2 + mean**2), axis=1) - m**2
    p_neg = w * special.ndtr(-mean / sd)
    p_pos = w - p_neg
    if is_null is None:
        lfsr = np.minimum(p_neg.sum(axis=1), p_pos.sum(axis=1))
    else:
        w0 = np.sum(w * is_null, axis=1)
        lfsr = np.minimum(w0 + np.sum(p_neg * ~is_null, axis=1), w0 + np.sum(p_pos * ~is_null, axis=1))
    if groups is not None:
        gw = np.stack([np.sum(w * (groups == k), axis=1) for k in labels], axis=1)
        safe = np.maximum(gw, 1e-300)
        gm = np.stack([np.sum(w * mean * (groups == k), axis=1) for k in labels], axis=1) / safe
        g2 = np.stack([np.sum(w * (sd**2 + mean**2) * (groups == k), axis=1) for k in labels], axis=1) / safe
        w, mean, sd = gw, gm, np.sqrt(np.maximum(g2 - gm**2, 1e-300))
    lo, hi = _hdi_histogram(w, mean, sd, prob, n_grid)
    return np.stack([m, np.sqrt(np.maximum(var, 0.0)), lfsr, lo, hi])


def _hdi_histogram(w, mean, sd, prob, n_grid):
    # The HDI is the highest-density set of a per-gene histogram spanning every component
    # that carries weight. Cell masses are CDF differences, so a narrow null component
    # keeps its whole mass however coarse the cells are.
    #
    # Components holding together under a quarter of 1 - prob cannot change the HDI's
    # extent much but would stretch the cells; they are left out of it. The share is counted
    # over the gene's own components of positive weight: counted over the columns, a gene's
    # interval moved with the labels that other genes' (or weightless padding) slots carry.
    present = np.maximum(np.sum(w > 0.0, axis=1, keepdims=True), 1)
    live = (w > (1.0 - prob) / (4.0 * present)) | (w == w.max(axis=1, keepdims=True))
    # The left-out components' mass may fall outside: the live mass inside is raised so that
    # the interval still holds ``prob`` of the whole posterior.
    target = np.minimum(prob / np.sum(np.where(live, w, 0.0), axis=1) * np.sum(w, axis=1), 1.0 - 1e-12)
    lo, hi = np.empty(w.shape[0]), np.empty(w.shape[0])
    _hdi_cells(np.ascontiguousarray(w, dtype=float), np.ascontiguousarray(mean, dtype=float),
               np.ascontiguousarray(sd, dtype=float), live, target, int(n_grid), lo, hi)
    return lo, hi


@numba.njit(cache=True, nogil=True)
def _hdi_cells(w, mean, sd, live, target, n_grid, lo, hi):  # pragma: no cover - compiled
    # One gene at a time, its cells in cache; a component only touches the cells within
    # 8.5 sds of its mean (beyond them its CDF difference is below 1e-16).
    G, C = w.shape
    mass = np.empty(n_grid)
    sqrt2 = math.sqrt(2.0)
    for g in range(G):
        a, b, broken = np.inf, -np.inf, False
        for c in range(C):
            if live[g, c]:
                broken |= not (math.isfinite(mean[g, c]) and math.isfinite(sd[g, c]) and sd[g, c] > 0.0)
                a = min(a, mean[g, c] - 7.0 * sd[g, c])
                b = max(b, mean[g, c] + 7.0 * sd[g, c])
        step = (b - a) / n_grid
        if broken or not (math.isfinite(step) and step > 0.0):
            # A gene with a component that is not finite (or of zero width) has no HDI.
            lo[g] = np.nan
            hi[g] = np.nan
            continue
        mass[:] = 0.0
        for c in range(C):
            if not live[g, c]:
                continue
            m, s = mean[g, c], sd[g, c]
            i0 = max(0, int(math.floor((m - 8.5 * s - a) / step)))
            i1 = min(n_grid, int(math.ceil((m + 8.5 * s - a) / step)))
            if s > 4.0 * step:
                # Spread over many cells: the midpoint rule is within (step / s)^2 / 24 < 0.3%.
                # The densities at equally spaced centres follow a product recurrence
                # (exp(-(x + h)^2 / 2) = exp(-x^2 / 2) exp(-x h - h^2 / 2), whose factor itself
                # shrinks by exp(-h^2) a cell), run outward from the cell nearest the mean so
                # that nothing underflows on the way: four exps a component, not one a cell.
                k = w[g, c] * step / (s * math.sqrt(2.0 * math.pi))
                h = step / s
                x0 = (a + (i0 + 0.5) * step - m) / s
                ic = min(max(i0 + int(round(-x0 / h)), i0), i1 - 1)
                xc = x0 + (ic - i0) * h
                q = math.exp(-h * h)
                top = k * math.exp(-0.5 * xc * xc)
                e = top
                r = math.exp(-xc * h - 0.5 * h * h)
                for i in range(ic, i1):
                    mass[i] += e
                    e *= r
                    r *= q
                e = top
                r = math.exp(xc * h - 0.5 * h * h)
                for i in range(ic - 1, i0 - 1, -1):
                    e *= r
                    r *= q
                    mass[i] += e
                continue
            prev = 0.5 * math.erfc(-(a + i0 * step - m) / (s * sqrt2))
            for i in range(i0, i1):
                cur = 0.5 * math.erfc(-(a + (i + 1) * step - m) / (s * sqrt2))
                mass[i] += w[g, c] * (cur - prev)
                prev = cur
        total = mass.sum()
        need = target[g] * total
        top = 0
        for i in range(1, n_grid):
            if mass[i] > mass[top]:
                top = i
        unimodal = True
        for i in range(1, n_grid):
            if (mass[i] < mass[i - 1]) if i <= top else (mass[i] > mass[i - 1]):
                unimodal = False
                break
        if unimodal:
            # The cells above any level form one run around the top cell: grow it toward the
            # heavier neighbour, which adds cells in the order of a sort, without the sort.
            first, last, acc = top, top, mass[top]
            while acc < need and (first > 0 or last < n_grid - 1):
                left = mass[first - 1] if first > 0 else -1.0
                right = mass[last + 1] if last < n_grid - 1 else -1.0
                if right > left:
                    last += 1
                    acc += right
                else:
                    first -= 1
                    acc += left
            # Cells tied with the last one taken are in the level set too (a symmetric
            # mixture centred in the grid has twin cells).
            level = min(mass[first], mass[last])
            while first > 0 and mass[first - 1] >= level:
                first -= 1
            while last < n_grid - 1 and mass[last + 1] >= level:
                last += 1
        else:
            ranked = np.sort(mass)
            # The smallest mass level whose cells at or above it hold ``target``.
            acc, level = 0.0, ranked[n_grid - 1]
            for j in range(n_grid - 1, -1, -1):
                acc += ranked[j]
                level = ranked[j]
                if acc >= need:
                    break
            first, last = n_grid - 1, 0
            for i in range(n_grid):
                if mass[i] >= level:
                    first = min(first, i)
                    last = max(last, i)
        # Cell edges, not centres: a null component's whole mass sits in one cell.
        lo[g] = a + first * step
        hi[g] = a + (last + 1) * step
