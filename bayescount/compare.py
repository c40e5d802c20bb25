"""Compare templates (or options such as ``dispersion_by``) fitted to the same counts.

:func:`compare` uses per-gene PSIS-LOO (or WAIC) from any fit path; each gene
prefers a template only when its ELPD difference exceeds twice its standard
error, and the overall table is ArviZ's (``arviz_stats.compare``, stacking
weights). :func:`compare_evidence` uses each gene's log marginal likelihood from the MAP
path: ``log p(y_g | shared hyperparameters)``, with the gene's coefficients
Laplace-integrated and its dispersion(s) and random-effect scales integrated
by quadrature. A difference of two fits' values is a per-gene log Bayes
factor (empirical Bayes: the shared hyperparameters are each fit's own
estimates).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import InputError
from .result import Fit

#: A per-gene log Bayes factor above which a preference is stated (Jeffreys' "strong", 10:1).
LOG_BF_THRESHOLD = float(np.log(10.0))


def compare_evidence(fits: dict[str, Fit], threshold: float = LOG_BF_THRESHOLD) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-gene and overall comparison of fits by their log marginal likelihoods.

    Parameters
    ----------
    fits : dict of str to Fit
        Two or more MAP fits to the same counts (same genes, samples and
        values), e.g. ``{"shared": fit(data), "by_group": fit(data, dispersion_by="group")}``.
    threshold : float
        A gene prefers the best fit only when its log evidence exceeds the
        runner-up's by more than this (default ``log 10``); otherwise
        ``"no preference"``.

    Returns
    -------
    genes : pandas.DataFrame
        ``gene, log_evidence_<name>... , preferred, log_bf`` (best minus runner-up).
    overall : pandas.DataFrame
        One row per fit, best first: ``model, log_evidence`` (summed over the
        genes every fit evaluated), ``diff`` (to the best), ``n_preferred``.

    Examples
    --------
    >>> from bayescount import simulate, fit
    >>> sim = simulate(n_genes=100, n_per_group=4, random_seed=5)
    >>> genes, overall = compare_evidence({"nb": fit(sim.data, random_seed=5),
    ...                                   "poisson": fit(sim.data, model="poisson", random_seed=5)})
    >>> overall.model.iloc[0]
    'nb'
    """
    if len(fits) < 2:
        raise InputError("compare_evidence needs two or more fits, as {name: fit}")
    names = list(fits)
    first = fits[names[0]]
    for name, f in fits.items():
        if not isinstance(f, Fit):
            raise InputError(f"{name!r} is not a Fit")
        if not f.has_group("map_stats") or "log_evidence" not in f.group("map_stats"):
            raise InputError(f"fit {name!r} has no log marginal likelihoods; refit it with method='map' "
                             "(NUTS and ADVI fits are compared by LOO instead: bayescount.compare)")
    _check_same_data(fits)
    ev = np.column_stack([fits[n].group("map_stats")["log_evidence"].values for n in names])
    usable = np.all(np.isfinite(ev), axis=1)
    order = np.argsort(-np.where(np.isfinite(ev), ev, -np.inf), axis=1)
    rows = np.arange(ev.shape[0])
    best, second = ev[rows, order[:, 0]], ev[rows, order[:, 1]]
    log_bf = np.where(usable, best - second, np.nan)
    preferred = np.where(usable & (log_bf > threshold), np.asarray(names, dtype=object)[order[:, 0]],
                         np.where(usable, "no preference", "not evaluated"))
    genes = pd.DataFrame({"gene": first.genes})
    for j, n in enumerate(names):
        genes[f"log_evidence_{n}"] = ev[:, j]
    genes["preferred"] = preferred
    genes["log_bf"] = log_bf
    total = ev[usable].sum(axis=0)
    overall = pd.DataFrame({"model": names, "log_evidence": total, "diff": total.max() - total,
                            "n_preferred": [int((preferred == n).sum()) for n in names]})
    overall = overall.sort_values("log_evidence", ascending=False, ignore_index=True)
    return genes, overall


def _check_same_data(fits: dict[str, Fit]) -> None:
    names = list(fits)
    first = fits[names[0]]
    for name, f in fits.items():
        if not isinstance(f, Fit):
            raise InputError(f"{name!r} is not a Fit")
        same = (f.genes.equals(first.genes)
                and np.array_equal(f.group("observed_data")["obs"].values, first.group("observed_data")["obs"].values)
                and np.array_equal(f.group("observed_data")["counts"].values,
                                  first.group("observed_data")["counts"].values))
        if not same:
            raise InputError(f"fits {names[0]!r} and {name!r} are not of the same counts (genes, samples or values "
                             "differ); compare fits of one data set")


def _overall(elpds: dict) -> pd.DataFrame:
    """ArviZ's comparison table from per-observation ELPDs, as ``model, rank, elpd, se, elpd_diff, dse, p, weight``."""
    import warnings

    import xarray as xr
    from arviz_stats import compare as az_compare
    from arviz_stats.utils import ELPDDataLOO

    objs = {}
    for name, e in elpds.items():
        flat = e.pointwise["elpd_i"].values.ravel()
        k = e.pointwise["pareto_k"].values.ravel() if "pareto_k" in e.pointwise else None
        objs[name] = ELPDDataLOO(
            elpd=e.elpd, se=e.se, p=e.p, n_samples=e.n_draws, n_data_points=flat.size, scale="log",
            warning=bool(k is not None and np.nanmax(k) > 0.7), good_k=0.7 if k is not None else None,
            elpd_i=xr.DataArray(flat, dims="point"),
            pareto_k=None if k is None else xr.DataArray(k, dims="point"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = az_compare(objs, round_to="none")
    table = table.rename_axis("model").reset_index()
    return table[["model", "rank", "elpd", "se", "elpd_diff", "dse", "p", "weight"]]


def compare(fits: dict[str, Fit], ic: str = "loo", memory="1GB", progress: bool = False
            ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Compare templates fitted to the same counts, per gene and overall, by LOO (or WAIC).

    Parameters
    ----------
    fits : dict of str to Fit
        Two or more fits of one data set (any method; MAP fits use their Laplace draws).
    ic : {"loo", "waic"}
    memory : str or int
        Budget for one gene chunk's log-likelihood (see :func:`bayescount.loo`).

    Returns
    -------
    genes : pandas.DataFrame
        ``gene, preferred, elpd_diff, dse, elpd_<model>...``: ``elpd_diff`` is
        the best template's ELPD minus the runner-up's for that gene and
        ``dse`` the standard error of that difference
        (``sqrt(n var(elpd_i^best - elpd_i^second))``); ``preferred`` names
        the best template only when ``elpd_diff > 2 dse``, else ``"no preference"``.
    overall : pandas.DataFrame
        ``model, rank, elpd, se, elpd_diff, dse, p, weight`` (rank 0 = best;
        ArviZ's ``compare`` with stacking weights; ``elpd_diff <= 0``).

    Examples
    --------
    >>> from bayescount import simulate, fit
    >>> sim = simulate(n_genes=60, n_per_group=4, random_seed=6)
    >>> genes, overall = compare({"nb_trend": fit(sim.data, random_seed=6),
    ...                           "poisson": fit(sim.data, model="poisson", random_seed=6)})
    >>> overall.model.iloc[0], genes.columns[:4].tolist()
    ('nb_trend', ['gene', 'preferred', 'elpd_diff', 'dse'])
    """
    from .loo import loo, waic

    if ic not in ("loo", "waic"):
        raise InputError(f"ic must be 'loo' or 'waic', got {ic!r}")
    if len(fits) < 2:
        raise InputError("compare needs two or more fits, as {name: fit}")
    _check_same_data(fits)
    reduce = loo if ic == "loo" else waic
    elpds = {name: reduce(f, memory=memory, progress=progress) for name, f in fits.items()}
    names = list(elpds)
    E = np.stack([elpds[n].pointwise["elpd_i"].values for n in names])  # (model, gene, obs)
    totals = E.sum(axis=2).T  # (gene, model)
    order = np.argsort(-totals, axis=1, kind="stable")
    g = np.arange(totals.shape[0])
    best, second = order[:, 0], order[:, 1]
    diff_i = E[best, g] - E[second, g]  # (gene, obs)
    n_obs = E.shape[2]
    elpd_diff = diff_i.sum(axis=1)
    dse = np.sqrt(n_obs * np.var(diff_i, axis=1))
    preferred = np.where(elpd_diff > 2 * dse, np.asarray(names, dtype=object)[best], "no preference")
    genes = pd.DataFrame({"gene": fits[names[0]].genes, "preferred": preferred, "elpd_diff": elpd_diff, "dse": dse})
    for j, n in enumerate(names):
        genes[f"elpd_{n}"] = totals[:, j]
    if ic == "loo":
        genes["n_high_k"] = sum(elpds[n].genes["n_high_k"].to_numpy() for n in names)
    overall = _overall(elpds)
    overall.attrs["ic"] = ic
    return genes, overall


__all__ = ["compare", "compare_evidence", "LOG_BF_THRESHOLD"]
