"""Compare templates (or options such as ``dispersion_by``) fitted to the same counts.

:func:`compare_evidence` uses each gene's log marginal likelihood from the MAP
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
        if not f.has_group("map_stats") or "log_evidence" not in f.idata["map_stats"]:
            raise InputError(f"fit {name!r} has no log marginal likelihoods; refit it with method='map' "
                             "(NUTS and ADVI fits are compared by LOO instead)")
        same = (f.genes.equals(first.genes)
                and np.array_equal(f.idata["observed_data"]["obs"].values, first.idata["observed_data"]["obs"].values)
                and np.array_equal(f.idata["observed_data"]["counts"].values, first.idata["observed_data"]["counts"].values))
        if not same:
            raise InputError(f"fits {names[0]!r} and {name!r} are not of the same counts (genes, samples or values "
                             "differ); compare fits of one data set")
    ev = np.column_stack([fits[n].idata["map_stats"]["log_evidence"].values for n in names])
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


__all__ = ["compare_evidence", "LOG_BF_THRESHOLD"]
