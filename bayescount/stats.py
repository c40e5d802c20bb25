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
                # Terms under e^-50 of the largest hold < 1e-19 of the sum, below its rounding:
                # most of the table's terms, and their exps are the kernel's cost.
                x = base[g, n] + lr[g, n, c] - m[c]
                if not x <= -50.0:
                    acc[c] += np.exp(x)
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
                x = log_pi[c] + lr[g, n, c] - m
                if not x <= -50.0:  # as in _lse_nodes
                    acc += np.exp(x)
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
    from scipy import optimize

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


def quad_form(vec, cov):
    """``vec^T cov vec`` over a stack of matrices ``cov`` (..., P, P), summed over the nonzero pairs only.

    A contrast usually names one or two coefficients: reading those entries
    of a (gene, slot, P, P) stack is several times cheaper than an einsum
    over all of them.

    Examples
    --------
    >>> cov = np.array([[[2.0, 0.5], [0.5, 1.0]]])
    >>> quad_form(np.array([0.0, 1.0]), cov), quad_form(np.array([1.0, -1.0]), cov)
    (array([1.]), array([2.]))
    """
    vec = np.asarray(vec, dtype=float)
    nz = np.flatnonzero(vec)
    out = np.zeros(cov.shape[:-2])
    for i in nz:
        for j in nz:
            out += (vec[i] * vec[j]) * cov[..., i, j]
    return out


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
        ``(n_genes, n_components)`` nonnegative integer labels: for the HDI
        only, components with the same label are merged into one normal by
        moments (e.g. one LFC-prior component at several dispersion nodes,
        whose means and sds barely differ).
    n_threads : int, optional
        Threads for the HDIs (default :func:`~bayescount._threads.default_threads`).

    Returns
    -------
    mean, sd, lfsr, hdi_low, hdi_high : numpy.ndarray
    """
    G = weights.shape[0]
    null = (np.zeros(weights.shape, dtype=bool) if null_component is None
            else np.broadcast_to(np.asarray(null_component, dtype=bool), weights.shape))
    # The labels present (nonnegative component indices; bincount is a tenth of np.unique's time).
    labels = None if groups is None else np.flatnonzero(np.bincount(np.ravel(groups)))
    # Each component's label as an index into ``labels`` (one column per label in the merge).
    label_of = None if groups is None else np.searchsorted(labels, np.broadcast_to(groups, weights.shape))
    out = np.empty((5, G))

    def block(sl):
        # Blocks of genes keep the work arrays in cache, and run on threads.
        out[:, sl] = _summary_block(weights[sl], mean[sl], sd[sl], prob, n_grid, null[sl],
                                    None if groups is None else label_of[sl], 0 if labels is None else labels.size)

    run_chunks(block, gene_blocks(G, 2048), resolve_threads(n_threads))
    return out[0], out[1], out[2], out[3], out[4]


def _summary_block(weights, mean, sd, prob, n_grid, is_null, label_of, n_labels):
    """:func:`mixture_summary` of a block of genes: (mean, sd, lfsr, hdi_low, hdi_high) stacked."""
    G = weights.shape[0]
    out = np.empty((5, G))
    merged = (np.empty((G, n_labels)), np.empty((G, n_labels)), np.empty((G, n_labels)))
    _moments_kernel(np.ascontiguousarray(weights, dtype=float), np.ascontiguousarray(mean, dtype=float),
                    np.ascontiguousarray(sd, dtype=float), np.ascontiguousarray(is_null),
                    np.zeros((1, 1), dtype=np.int64) if label_of is None
                    else np.ascontiguousarray(label_of, dtype=np.int64),
                    n_labels, out, *merged)
    w, m, s = merged if n_labels else (weights / weights.sum(axis=1, keepdims=True), mean, sd)
    out[3], out[4] = _hdi_histogram(w, m, s, prob, n_grid)
    return out


@numba.njit(cache=True, nogil=True)
def _moments_kernel(weights, mean, sd, is_null, label_of, n_labels, out, gw, gm, gsd):  # pragma: no cover
    # Mean, sd and lfsr of each gene's mixture into out[:3]; with labels, the components
    # merged by moments per label into (gw, gm, gsd) for the HDI. One pass per gene: the
    # numpy version made ~50 temporaries of each block and was a third of a table's time.
    G, C = weights.shape
    inv_sqrt2 = 1.0 / math.sqrt(2.0)
    for g in range(G):
        total = 0.0
        for c in range(C):
            total += weights[g, c]
        m, m2, neg, pos, w0 = 0.0, 0.0, 0.0, 0.0, 0.0
        for k in range(n_labels):
            gw[g, k] = 0.0
            gm[g, k] = 0.0
            gsd[g, k] = 0.0
        for c in range(C):
            w = weights[g, c] / total
            mu, s = mean[g, c], sd[g, c]
            m += w * mu
            m2 += w * (s * s + mu * mu)
            if is_null[g, c]:
                w0 += w
            else:
                # The smaller tail straight from erfc: a tiny lfsr is not lost to 1 - (1 - lfsr).
                tail = 0.5 * math.erfc(abs(mu) / s * inv_sqrt2)
                if mu >= 0.0:
                    neg += w * tail
                    pos += w * (1.0 - tail)
                else:
                    pos += w * tail
                    neg += w * (1.0 - tail)
            if n_labels:
                k = label_of[g, c]
                gw[g, k] += w
                gm[g, k] += w * mu
                gsd[g, k] += w * (s * s + mu * mu)
        out[0, g] = m
        out[1, g] = math.sqrt(max(m2 - m * m, 0.0))
        out[2, g] = min(w0 + neg, w0 + pos)
        for k in range(n_labels):
            safe = max(gw[g, k], 1e-300)
            mu = gm[g, k] / safe
            gm[g, k] = mu
            gsd[g, k] = math.sqrt(max(gsd[g, k] / safe - mu * mu, 1e-300))


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


#: Local maxima of a histogram beyond which :func:`_level_of` sorts the cells instead.
_MAX_PEAKS = 16


@numba.njit(cache=True, nogil=True)
def _level_of(mass, need, seeds, run_lo, run_hi, taken):  # pragma: no cover - compiled
    """The largest level whose cells at or above it hold ``need`` of the histogram ``mass``.

    The cells are taken in decreasing mass, as a sort would give them, by
    growing runs of cells from the local maxima: from every cell an uphill
    path leads to a maximum, so the heaviest cell next to a run (or a maximum
    not yet reached) is always the heaviest left. A spike beside a slab (half
    of the genes at 20,000 x 12) has two maxima: a few comparisons a cell
    instead of sorting 256 cells. ``seeds``, ``run_lo``, ``run_hi`` and
    ``taken`` are work space; more than ``seeds.size`` maxima fall back to a sort.
    """
    n = mass.size
    n_seeds = 0
    for i in range(n):
        if (i == 0 or mass[i] > mass[i - 1]) and (i == n - 1 or mass[i] >= mass[i + 1]):
            if n_seeds == seeds.size:
                n_seeds = -1
                break
            seeds[n_seeds] = i
            n_seeds += 1
    if n_seeds < 0:
        ranked = np.sort(mass)
        acc, level = 0.0, ranked[n - 1]
        for j in range(n - 1, -1, -1):
            acc += ranked[j]
            level = ranked[j]
            if acc >= need:
                break
        return level
    taken[:] = False
    n_runs = 0
    acc, level = 0.0, mass.max()
    while acc < need:
        # The heaviest candidate: a cell next to a run, or a maximum not yet reached.
        best, cell = -1.0, -1
        for r in range(n_runs):
            if run_lo[r] < 0:
                continue
            c = run_lo[r] - 1
            if c >= 0 and not taken[c] and mass[c] > best:
                best, cell = mass[c], c
            c = run_hi[r] + 1
            if c < n and not taken[c] and mass[c] > best:
                best, cell = mass[c], c
        for k in range(n_seeds):
            c = seeds[k]
            if not taken[c] and mass[c] > best:
                best, cell = mass[c], c
        if cell < 0:
            break
        taken[cell] = True
        acc += best
        level = best
        # Join the runs the cell touches (run_lo < 0 marks a run merged into another).
        left, right = -1, -1
        for r in range(n_runs):
            if run_lo[r] >= 0:
                if run_hi[r] == cell - 1:
                    left = r
                elif run_lo[r] == cell + 1:
                    right = r
        if left >= 0 and right >= 0:
            run_hi[left] = run_hi[right]
            run_lo[right] = -1
        elif left >= 0:
            run_hi[left] = cell
        elif right >= 0:
            run_lo[right] = cell
        else:
            run_lo[n_runs] = cell
            run_hi[n_runs] = cell
            n_runs += 1
    return level


@numba.njit(cache=True, nogil=True)
def _hdi_cells(w, mean, sd, live, target, n_grid, lo, hi):  # pragma: no cover - compiled
    # One gene at a time, its cells in cache; a component only touches the cells within
    # 8.5 sds of its mean (beyond them its CDF difference is below 1e-16).
    G, C = w.shape
    mass = np.empty(n_grid)
    dens = np.empty(2 * n_grid + 1)
    seeds = np.empty(_MAX_PEAKS, dtype=np.int64)
    run_lo = np.empty(_MAX_PEAKS, dtype=np.int64)
    run_hi = np.empty(_MAX_PEAKS, dtype=np.int64)
    taken = np.empty(n_grid, dtype=np.bool_)
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
            if s > step:
                # A few cells a sd: Simpson's rule on the densities at the cells' edges and
                # centres (the same recurrence at half a cell) is within (step / s)^4 / 1000 of
                # the heaviest cell's mass, closer than the midpoint rule above; the CDF
                # differences below cost an erfc a cell (a fifth of the HDIs' time at 20,000 x 12).
                k = w[g, c] / (s * math.sqrt(2.0 * math.pi))
                h = 0.5 * step / s
                n_pts = 2 * (i1 - i0) + 1
                x0 = (a + i0 * step - m) / s
                jc = min(max(int(round(-x0 / h)), 0), n_pts - 1)
                xc = x0 + jc * h
                q = math.exp(-h * h)
                top = k * math.exp(-0.5 * xc * xc)
                e = top
                r = math.exp(-xc * h - 0.5 * h * h)
                for j in range(jc, n_pts):
                    dens[j] = e
                    e *= r
                    r *= q
                e = top
                r = math.exp(xc * h - 0.5 * h * h)
                for j in range(jc - 1, -1, -1):
                    e *= r
                    r *= q
                    dens[j] = e
                sixth = step / 6.0
                for i in range(i0, i1):
                    j = 2 * (i - i0)
                    mass[i] += sixth * (dens[j] + 4.0 * dens[j + 1] + dens[j + 2])
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
            level = _level_of(mass, need, seeds, run_lo, run_hi, taken)
            first, last = n_grid - 1, 0
            for i in range(n_grid):
                if mass[i] >= level:
                    first = min(first, i)
                    last = max(last, i)
        # Cell edges, not centres: a null component's whole mass sits in one cell.
        lo[g] = a + first * step
        hi[g] = a + (last + 1) * step
