"""Posterior predictive checks per gene, chunk by chunk.

For every posterior draw the counts are replicated from the template's
likelihood and four statistics are compared with the observed ones: the zero
fraction, the variance/mean ratio and the maximum of the normalized counts
(``y / exp(offset)``), and the Pearson chi-square per degree of freedom
(``sum (y - E y)^2 / Var y / (n - p)`` at the draw's parameters, a
discrepancy that depends on the draw). The posterior predictive p-value of a
statistic is ``P(T(y_rep) > T(y)) + P(T(y_rep) = T(y)) / 2``; values near 0 or
1 say the template cannot reproduce that feature of the gene's counts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import InputError
from .loglik import DEFAULT_MEMORY, fit_data, iter_chunks
from .progress import progress_bar
from .result import Fit

STATISTICS = ("zero_frac", "vmr", "pearson", "max")
#: Pearson chi-square per degree of freedom above which counts are overdispersed for the template
#: (the brief's check of a Poisson baseline).
OVERDISPERSION = 1.5


def _stats(y, mu, var, rate_scale, df):
    """(zero_frac, vmr, pearson, max) over the last axis; ``y`` and ``mu`` (..., obs)."""
    norm = y / rate_scale
    mean = norm.mean(axis=-1)
    vmr = np.where(mean > 0, norm.var(axis=-1, ddof=1) / np.maximum(mean, 1e-300), np.nan)
    pearson = np.sum((y - mu) ** 2 / np.maximum(var, 1e-300), axis=-1) / df
    return (y == 0).mean(axis=-1), vmr, pearson, norm.max(axis=-1)


def ppc(res: Fit, memory=DEFAULT_MEMORY, random_seed=None, alpha: float = 0.05, progress: bool = False
        ) -> pd.DataFrame:
    """Posterior predictive checks of every gene.

    Parameters
    ----------
    res : Fit
    memory : str or int
        Budget for one gene chunk's replicated counts.
    random_seed : int, optional
        Seed of the replications (default: the fit's seed).
    alpha : float
        A check fails when its p-value is below ``alpha / 2`` or above ``1 - alpha / 2``.

    Returns
    -------
    pandas.DataFrame
        Per gene, for each statistic ``T`` in ``zero_frac, vmr, pearson, max``:
        ``T_obs`` (observed; for ``pearson`` its posterior mean), ``T_rep``
        (mean over replications) and ``T_ppp``; then ``overdispersed``
        (``pearson_obs > 1.5``) and ``failed`` (the failing checks, comma-separated,
        empty when none). ``table.attrs["failed_genes"]`` lists the genes with a failure.

    Examples
    --------
    >>> from bayescount import simulate, fit
    >>> res = fit(simulate(n_genes=30, n_per_group=4, random_seed=2).data, random_seed=2, draws=100)
    >>> ppc(res).columns[:3].tolist()
    ['gene', 'zero_frac_obs', 'zero_frac_rep']
    """
    rng = np.random.default_rng(res.random_seed if random_seed is None else random_seed)
    data = fit_data(res)
    lik = res.spec.likelihood
    rate_scale = np.exp(data.offset)
    df = max(data.n_obs - data.design.matrix.shape[1], 1)
    G = data.n_genes
    out = {f"{t}_{kind}": np.empty(G) for t in STATISTICS for kind in ("obs", "rep", "ppp")}
    with progress_bar(progress, "posterior predictive checks", total=G) as bar:
        for genes, prob, theta in iter_chunks(res, memory, data=data, copies=8):
            S, rows = theta.shape[0], np.arange(prob.y.shape[0])
            y = prob.y
            acc = {t: [] for t in STATISTICS}
            obs_acc = {t: [] for t in STATISTICS}
            for d in range(S):
                eta, params = prob._eta_params(theta[d], rows)
                mu = np.exp(eta)
                m, v = lik.mean_var(mu, params)
                y_rep = lik.replicate(mu, params, rng).astype(float)
                for t, val in zip(STATISTICS, _stats(y_rep, m, v, rate_scale, df)):
                    acc[t].append(val)
                for t, val in zip(STATISTICS, _stats(y, m, v, rate_scale, df)):
                    obs_acc[t].append(val)
            for t in STATISTICS:
                rep, obs = np.array(acc[t]), np.array(obs_acc[t])  # (draws, genes)
                out[f"{t}_obs"][genes] = obs.mean(axis=0)
                out[f"{t}_rep"][genes] = np.nanmean(rep, axis=0)
                out[f"{t}_ppp"][genes] = np.nanmean((rep > obs) + 0.5 * (rep == obs), axis=0)
            bar.advance(genes.stop - genes.start)
    table = pd.DataFrame({"gene": res.genes, **out})
    table["overdispersed"] = table["pearson_obs"] > OVERDISPERSION
    lo, hi = alpha / 2, 1 - alpha / 2
    fails = np.stack([(table[f"{t}_ppp"] < lo) | (table[f"{t}_ppp"] > hi) for t in STATISTICS], axis=1)
    table["failed"] = [",".join(t for t, f in zip(STATISTICS, row) if f) for row in fails]
    table.attrs["failed_genes"] = table.gene[table.failed != ""].tolist()
    return table





def replicate_gene(res: Fit, gene, n_draws: int = 200, random_seed=None) -> tuple[np.ndarray, np.ndarray]:
    """One gene's observed counts ``(obs,)`` and ``n_draws`` replications ``(draws, obs)``."""
    from .loglik import _theta
    from .model import layout
    from .newton import GeneProblem

    names = list(res.genes)
    if gene not in names:
        raise InputError(f"gene {gene!r} is not in the fit")
    g = names.index(gene)
    rng = np.random.default_rng(res.random_seed if random_seed is None else random_seed)
    data = fit_data(res)
    sub = data.subset_genes(np.array([g]))
    prob = GeneProblem(res.spec, sub, layout(res.spec, data))
    theta = _theta(res.idata["posterior"], layout(res.spec, data), slice(g, g + 1))
    pick = rng.choice(theta.shape[0], size=min(n_draws, theta.shape[0]), replace=False)
    reps = []
    for d in pick:
        eta, params = prob._eta_params(theta[d], np.array([0]))
        reps.append(res.spec.likelihood.replicate(np.exp(eta), params, rng)[0])
    return sub.counts[0].astype(float), np.asarray(reps, dtype=float)
__all__ = ["ppc", "replicate_gene", "STATISTICS", "OVERDISPERSION"]
