"""Posterior summaries shared by every fit path: lfsr, s-values, HDIs, BH."""

from __future__ import annotations

import numpy as np
from scipy import stats


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



def bh_adjust(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values."""
    return stats.false_discovery_control(np.asarray(pvalues, dtype=float), method="bh")


def mixture_weights_em(xhat, s2, mask, grid, concentration, pi0=None, max_iter=300, tol=1e-5, loglik=None):
    """Mixture weights of a gene-level scale mixture by penalized EM (ash's estimator).

    Each gene's coefficients share one component ``k``: the marginal of the
    Gaussian likelihood summaries is ``prod_j N(xhat_gj; 0, grid_k^2 + s2_gj)``
    over the coordinates with ``mask``; the Dirichlet ``concentration`` acts as
    pseudo-counts (a null weight above 1 favours the smallest scale). A
    precomputed (gene, component) ``loglik`` (e.g. Laplace evidences) replaces
    the Gaussian summaries; ``-inf`` marks components not evaluated for a gene.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = np.r_[rng.normal(0, 0.1, 900), rng.normal(0, 2.0, 100)][:, None]
    >>> pi = mixture_weights_em(x, np.full_like(x, 0.01), np.ones_like(x), np.array([0.01, 2.0]), np.ones(2))
    >>> np.round(pi, 1)
    array([0.9, 0.1])
    """
    if loglik is None:
        loglik = component_loglik(xhat, s2, mask, grid)
        keep = mask.any(axis=1)
    else:
        keep = np.isfinite(loglik).any(axis=1)
    loglik = loglik[keep]
    # Work with likelihood ratios to the best component: one exp per EM run, not per iteration.
    lik = np.exp(loglik - loglik.max(axis=1, keepdims=True))
    K = grid.size
    pi = np.full(K, 1.0 / K) if pi0 is None else np.asarray(pi0, float)
    n = loglik.shape[0]
    for _ in range(max_iter):
        r = lik * pi[None, :]
        r /= np.maximum(r.sum(axis=1, keepdims=True), 1e-300)
        new = np.maximum(r.sum(axis=0) + concentration - 1.0, 0.0)
        new /= max(new.sum(), 1e-300) if n else 1.0
        if np.max(np.abs(new - pi)) < tol:
            pi = new
            break
        pi = new
    return pi


def component_loglik(xhat, s2, mask, grid):
    """``sum_j mask_gj log N(xhat_gj; 0, grid_k^2 + s2_gj)`` as a (gene, component) array."""
    var = grid[None, None, :] ** 2 + s2[:, :, None]
    ll = -0.5 * (xhat[:, :, None] ** 2 / var + np.log(2 * np.pi * var))
    return np.sum(mask[:, :, None] * ll, axis=1)


def mixture_summary(weights, mean, sd, prob: float, n_grid: int = 256, null_component=None):
    """Mean, sd, lfsr and HDI of per-gene mixtures of normals.

    Parameters
    ----------
    weights, mean, sd : numpy.ndarray
        ``(n_genes, n_components)``.
    prob : float
        HDI probability. The HDI is the highest-density set on a fine grid; for
        a multimodal mixture its hull is returned.
    null_component : int or boolean array, optional
        Component(s) that stand for "no effect" (ash's point mass): their weight
        counts as an error for either sign in the lfsr.

    Returns
    -------
    mean, sd, lfsr, hdi_low, hdi_high : numpy.ndarray
    """
    w = weights / weights.sum(axis=1, keepdims=True)
    m = np.sum(w * mean, axis=1)
    var = np.sum(w * (sd**2 + mean**2), axis=1) - m**2
    p_neg = w * stats.norm.cdf(-mean / sd)
    p_pos = w - p_neg
    if null_component is None:
        lfsr = np.minimum(p_neg.sum(axis=1), p_pos.sum(axis=1))
    else:
        is_null = np.zeros(w.shape[1], dtype=bool)
        is_null[null_component] = True
        w0 = w[:, is_null].sum(axis=1)
        lfsr = np.minimum(w0 + p_neg[:, ~is_null].sum(axis=1), w0 + p_pos[:, ~is_null].sum(axis=1))
    # The HDI uses each gene's three heaviest components (the rest carry negligible mass)
    # and spans only those, so a negligible wide component does not coarsen the grid.
    top = np.argsort(-w, axis=1)[:, : min(3, w.shape[1])]
    wt = np.take_along_axis(w, top, axis=1)
    mt = np.take_along_axis(mean, top, axis=1)
    st = np.take_along_axis(sd, top, axis=1)
    live = wt > 1e-4 * wt[:, :1]
    lo_all = np.min(np.where(live, mt - 7 * st, np.inf), axis=1)
    hi_all = np.max(np.where(live, mt + 7 * st, -np.inf), axis=1)
    t = np.linspace(0.0, 1.0, n_grid)
    x = lo_all[:, None] + (hi_all - lo_all)[:, None] * t[None, :]  # (G, n_grid)
    z = (x[:, :, None] - mt[:, None, :]) / st[:, None, :]
    dens = np.einsum("gk,gnk->gn", wt / st, np.exp(-0.5 * z * z))
    mass = dens * ((hi_all - lo_all) / (n_grid - 1))[:, None]
    order = np.argsort(-dens, axis=1)
    cum = np.cumsum(np.take_along_axis(mass, order, axis=1), axis=1) / mass.sum(axis=1, keepdims=True)
    inside = np.zeros_like(dens, dtype=bool)
    take = cum - np.take_along_axis(mass, order, axis=1) / mass.sum(axis=1, keepdims=True) < prob
    np.put_along_axis(inside, order, take, axis=1)
    xin = np.where(inside, x, np.nan)
    return m, np.sqrt(np.maximum(var, 0.0)), lfsr, np.nanmin(xin, axis=1), np.nanmax(xin, axis=1)
