"""Plots of fits and comparisons: each public function returns a matplotlib Figure.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot
state, no backend switching), so they work in scripts, notebooks and servers:
``fig.savefig("ma.png")`` or ``fig.savefig("ma.svg")``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .errors import InputError
from .result import Fit

_CALL = "#c0392b"
_REST = "#7f8c8d"


def _figure(width=6.0, height=4.0):
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def plot_ma(res: Fit, contrast=None, svalue: float = 0.05) -> Figure:
    """MA plot: posterior mean log2 fold change against base mean; calls (``svalue < svalue``) in red.

    Examples
    --------
    >>> from bayescount import simulate, fit
    >>> fig = plot_ma(fit(simulate(n_genes=50, n_per_group=3, random_seed=1).data, random_seed=1))
    >>> fig.axes[0].get_xlabel()
    'base mean (log scale)'
    """
    t = res.lfc(contrast)
    fig, ax = _figure()
    call = t.svalue < svalue
    ax.scatter(t.base_mean[~call], t.log2fc[~call], s=6, c=_REST, alpha=0.6, label="not called")
    ax.scatter(t.base_mean[call], t.log2fc[call], s=8, c=_CALL, label=f"svalue < {svalue:g}")
    ax.set_xscale("log")
    ax.axhline(0, color="black", lw=0.8)
    ax.set(xlabel="base mean (log scale)", ylabel="log2 fold change", title=f"MA plot: {t.attrs.get('contrast', '')}")
    ax.legend(frameon=False, fontsize=8)
    return fig


def plot_volcano(res: Fit, contrast=None, y: str = "lfsr", threshold: float = 0.05) -> Figure:
    """Volcano plot: log2 fold change against ``-log10(lfsr)`` (or ``svalue``)."""
    if y not in ("lfsr", "svalue"):
        raise InputError(f"y must be 'lfsr' or 'svalue', got {y!r}")
    t = res.lfc(contrast)
    fig, ax = _figure()
    v = -np.log10(np.maximum(t[y].to_numpy(), 1e-300))
    call = t.svalue < threshold
    ax.scatter(t.log2fc[~call], v[~call], s=6, c=_REST, alpha=0.6)
    ax.scatter(t.log2fc[call], v[call], s=8, c=_CALL, label=f"svalue < {threshold:g}")
    ax.set(xlabel="log2 fold change", ylabel=f"-log10 {y}", title=f"Volcano: {t.attrs.get('contrast', '')}")
    ax.legend(frameon=False, fontsize=8)
    return fig


def plot_dispersion(res: Fit) -> Figure:
    """Per-gene dispersions against base mean, with the learned trend ``a0 + a1/mu`` and its ±2 sigma_d band."""
    genes = res.gene_summary()
    if "dispersion" not in genes:
        raise InputError(f"template {res.spec.name!r} has no dispersion")
    mu = res.idata["constant_data"]["base_mean"].values
    fig, ax = _figure()
    ax.scatter(mu, genes.dispersion, s=6, c=_REST, alpha=0.6, label="gene (posterior mean)")
    hyper = res.hyper
    if {"a0", "a1", "sigma_d"} <= set(hyper):
        grid = np.geomspace(max(mu.min(), 1e-2), mu.max(), 200)
        trend = hyper["a0"] + hyper["a1"] / grid
        ax.plot(grid, trend, color=_CALL, lw=1.5, label="trend a0 + a1/mean")
        band = np.exp(2 * hyper["sigma_d"])
        ax.fill_between(grid, trend / band, trend * band, color=_CALL, alpha=0.12, label="±2 sigma_d")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(xlabel="base mean", ylabel="dispersion", title="Dispersion vs mean")
    ax.legend(frameon=False, fontsize=8)
    return fig


def plot_ppc(res: Fit, gene, n_draws: int = 200, random_seed=None) -> Figure:
    """Observed counts of one gene against replicated counts from the posterior (50% and 95% ranges)."""
    from .ppc import replicate_gene

    y, y_rep = replicate_gene(res, gene, n_draws=n_draws, random_seed=random_seed)
    fig, ax = _figure(7.0, 3.5)
    x = np.arange(y.size)
    lo95, lo50, med, hi50, hi95 = np.percentile(y_rep, [2.5, 25, 50, 75, 97.5], axis=0)
    ax.vlines(x, lo95, hi95, color=_REST, lw=1, label="replicated 95%")
    ax.vlines(x, lo50, hi50, color=_REST, lw=4, label="replicated 50%")
    ax.scatter(x, y, c=_CALL, s=18, zorder=3, label="observed")
    ax.set_xticks(x, [str(o) for o in res.idata["observed_data"]["obs"].values], rotation=90, fontsize=6)
    ax.set(ylabel="count", title=f"Posterior predictive check: {gene}")
    if y.max() > 50:
        ax.set_yscale("symlog", linthresh=10)
    ax.legend(frameon=False, fontsize=8)
    return fig


def plot_compare(overall: pd.DataFrame) -> Figure:
    """ELPD of each template with its standard error, and the difference to the best with its SE."""
    fig, ax = _figure(6.0, 0.6 * len(overall) + 1.5)
    yy = np.arange(len(overall))[::-1]
    ax.errorbar(overall.elpd, yy, xerr=overall.se, fmt="o", color="black", label="elpd ± se")
    best = overall.elpd.max()
    ax.errorbar(best + overall.elpd_diff, yy - 0.2, xerr=overall.dse, fmt="^", color=_CALL, label="difference ± dse")
    ax.set_yticks(yy, overall.model)
    ax.set(xlabel="ELPD (higher is better)", title=f"Template comparison ({overall.attrs.get('ic', 'loo').upper()})")
    ax.legend(frameon=False, fontsize=8)
    return fig


def plot_pareto_k(elpd) -> Figure:
    """Pareto k of every observation (from :func:`bayescount.loo`), with the 0.7 outlier line."""
    if "pareto_k" not in elpd.pointwise:
        raise InputError("Pareto k values come from bayescount.loo, not waic")
    k = elpd.pointwise["pareto_k"].values.ravel()
    fig, ax = _figure()
    bad = k > 0.7
    ax.scatter(np.flatnonzero(~bad), k[~bad], s=4, c=_REST, alpha=0.6)
    ax.scatter(np.flatnonzero(bad), k[bad], s=10, c=_CALL, label=f"k > 0.7 ({int(bad.sum())})")
    ax.axhline(0.7, color=_CALL, lw=0.8, ls="--")
    ax.set(xlabel="observation (gene-major order)", ylabel="Pareto k", title="PSIS diagnostic per observation")
    ax.legend(frameon=False, fontsize=8)
    return fig


def plot_lfc_intervals(res: Fit, genes, contrast=None, hdi_prob: float = 0.95) -> Figure:
    """Posterior mean log2 fold changes with their HDIs for chosen genes."""
    t = res.lfc(contrast, hdi_prob=hdi_prob).set_index("gene")
    missing = [g for g in genes if g not in t.index]
    if missing:
        raise InputError(f"genes not in the fit: {missing[:5]}")
    t = t.loc[list(genes)]
    fig, ax = _figure(6.0, 0.3 * len(t) + 1.2)
    yy = np.arange(len(t))[::-1]
    ax.hlines(yy, t.hdi_low, t.hdi_high, color="black")
    ax.scatter(t.log2fc, yy, color=_CALL, zorder=3)
    ax.axvline(0, color=_REST, lw=0.8)
    ax.set_yticks(yy, t.index)
    ax.set(xlabel=f"log2 fold change ({hdi_prob:.0%} HDI)", title=t.attrs.get("contrast", ""))
    return fig


__all__ = ["plot_compare", "plot_dispersion", "plot_lfc_intervals", "plot_ma", "plot_pareto_k", "plot_ppc",
           "plot_volcano"]


def plot_sbc(ranks: pd.DataFrame, n_bins: int = 20, max_panels: int = 8) -> Figure:
    """Rank histograms of a simulation-based calibration (:func:`bayescount.sbc`), one panel per coordinate.

    The grey band is where 99% of a bin's counts fall when the ranks are
    uniform (binomial); bars outside it in a U (or hump) mean posteriors too
    narrow (or wide), a slope means shifted ones.

    Examples
    --------
    >>> import pandas as pd
    >>> r = pd.DataFrame({"variable": "beta", "coord": "x", "gene": range(500), "rank": np.linspace(0, 1, 500)})
    >>> plot_sbc(r).axes[0].get_title()
    'beta: x'
    """
    from scipy import stats

    groups = list(ranks.groupby(["variable", "coord"], sort=False))[:max_panels]
    if not groups:
        raise InputError("no ranks to plot")
    cols = min(len(groups), 4)
    rows = -(-len(groups) // cols)
    fig = Figure(figsize=(3.2 * cols, 2.6 * rows), layout="constrained")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    for i, ((var, coord), r) in enumerate(groups):
        ax = fig.add_subplot(rows, cols, i + 1)
        n = len(r)
        lo, hi = stats.binom.ppf([0.005, 0.995], n, 1.0 / n_bins)
        ax.axhspan(lo, hi, color="#d5d8dc", zorder=0)
        ax.axhline(n / n_bins, color="black", lw=0.8)
        ax.hist(r["rank"], bins=edges, color=_REST, edgecolor="white")
        ax.set(title=f"{var}: {coord}", xlabel="normalized rank", ylabel="genes")
    return fig
