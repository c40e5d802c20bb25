"""Did the fit work? Sampler, ADVI and MAP diagnostics in one table, with advice.

R-hat and ESS come from arviz-stats; divergences and tree-depth hits from the
sampler's ``sample_stats``; ADVI's convergence from its loss history; the MAP
path's from each gene's Newton solves.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .result import Fit

log = logging.getLogger(__name__)

RHAT_MAX = 1.01
ESS_MIN = 400


def _per_gene_nuts(res: Fit) -> pd.DataFrame:
    from arviz_stats import ess, rhat

    post = res.idata["posterior"]
    names = [v for v in ("beta", "re", "log_dispersion", "logit_zero", "log_re_sd") if v in post]
    out = pd.DataFrame({"gene": res.genes})
    r, eb, et = [], [], []
    for v in names:
        da = post[v]
        other = [d for d in da.dims if d not in ("chain", "draw", "gene")]
        r.append(rhat(da).max(other).values if other else rhat(da).values)
        eb.append(ess(da, method="bulk").min(other).values if other else ess(da, method="bulk").values)
        et.append(ess(da, method="tail").min(other).values if other else ess(da, method="tail").values)
    out["rhat_max"] = np.max(r, axis=0)
    out["ess_bulk_min"] = np.min(eb, axis=0)
    out["ess_tail_min"] = np.min(et, axis=0)
    return out


def _sampler_counts(res: Fit) -> tuple[int, int, int]:
    """(divergences, tree-depth hits, total draws) from sample_stats (PyMC and nutpie names)."""
    if not res.has_group("sample_stats"):
        return 0, 0, 0
    ss = res.idata["sample_stats"]
    div = next((ss[n] for n in ("diverging", "divergences") if n in ss), None)
    depth = next((ss[n] for n in ("reached_max_treedepth", "maxdepth_reached") if n in ss), None)
    n = int(div.size) if div is not None else 0
    return (int(div.values.sum()) if div is not None else 0, int(depth.values.sum()) if depth is not None else 0, n)


def diagnostics(res: Fit, warn: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-gene and overall convergence diagnostics.

    Parameters
    ----------
    res : Fit
    warn : bool
        Log a warning, with what to do, for every failed check.

    Returns
    -------
    genes : pandas.DataFrame
        NUTS: ``gene, rhat_max, ess_bulk_min, ess_tail_min, ok``; MAP:
        ``gene, converged, n_iter, ok``; ADVI: ``gene, ok`` (ADVI has no per-gene check).
    checks : pandas.DataFrame
        ``check, value, threshold, ok, advice``: one row per check of the method.

    Examples
    --------
    >>> from bayescount import simulate, fit
    >>> genes, checks = diagnostics(fit(simulate(n_genes=30, n_per_group=3, random_seed=1).data, random_seed=1))
    >>> checks.check.tolist()
    ['map_not_converged']
    """
    rows = []
    if res.method == "nuts":
        genes = _per_gene_nuts(res)
        genes["ok"] = (genes.rhat_max <= RHAT_MAX) & (genes.ess_bulk_min >= ESS_MIN) & (genes.ess_tail_min >= ESS_MIN)
        div, depth, n = _sampler_counts(res)
        rows += [
            ("rhat_max", float(genes.rhat_max.max()), RHAT_MAX, bool(genes.rhat_max.max() <= RHAT_MAX),
             "chains disagree: run more tuning and draws (tune=, draws=) or more chains"),
            ("ess_bulk_min", float(genes.ess_bulk_min.min()), ESS_MIN, bool(genes.ess_bulk_min.min() >= ESS_MIN),
             "too few effective draws: raise draws="),
            ("ess_tail_min", float(genes.ess_tail_min.min()), ESS_MIN, bool(genes.ess_tail_min.min() >= ESS_MIN),
             "interval ends are noisy: raise draws="),
            ("divergences", div, 0, div == 0,
             "the sampler missed regions of the posterior: raise target_accept or simplify the template"),
            ("tree_depth_hits", depth, 0, depth == 0, "long trajectories were cut: raise max_treedepth"),
        ]
        genes_bad = int((~genes.ok).sum())
        rows.append(("genes_failing", genes_bad, 0, genes_bad == 0, "see the per-gene table for which genes"))
    elif res.method == "advi":
        genes = pd.DataFrame({"gene": res.genes, "ok": True})
        conv = bool(int(res.idata.attrs.get("advi_converged", 0)))
        rows.append(("advi_converged", int(conv), 1, conv, "the ADVI loss was still falling: raise advi_steps"))
    else:
        st = res.group("map_stats")
        genes = pd.DataFrame({"gene": res.genes, "converged": st["converged"].values, "n_iter": st["n_iter"].values})
        genes["ok"] = genes.converged
        n_bad = int((~genes.converged).sum())
        rows.append(("map_not_converged", n_bad, 0, n_bad == 0,
                     "these genes are flagged map_not_converged: check their counts, or fit them with method='nuts'"))
    checks = pd.DataFrame(rows, columns=["check", "value", "threshold", "ok", "advice"])
    if warn:
        for r in checks.itertuples():
            if not r.ok:
                log.warning("diagnostic %s = %s (threshold %s): %s", r.check, r.value, r.threshold, r.advice)
    return genes, checks


__all__ = ["diagnostics", "RHAT_MAX", "ESS_MIN"]
