"""Simulation-based calibration: genes drawn from a template's own prior, fitted, truth ranked.

Talts et al. (2018): if parameters are drawn from the prior and data from the
likelihood, the rank of each true value among exact posterior draws is
uniform. A genome-scale template makes this cheap: every gene is one
replicate, so a single simulated data set of a few thousand genes gives a
few thousand ranks per coordinate, and a fit path whose posteriors are too
narrow, too wide, shifted or skewed shows up as a non-uniform histogram.

The shared hyperparameters are held at the values given (the fit still
learns them, as it would on real data: with thousands of genes their
estimates are close, and what remains is part of what is being checked).
Holding them fixed makes the check exact only as their posterior
concentrates: with a few hundred genes, NUTS's (rightly) uncertain mixture
weights widen every gene's LFC posterior beyond the fixed-weight truth's,
and its intervals over-cover.
Every per-gene coordinate is drawn from the prior the fit uses, so the check
is exact. The templates' weakly informative intercept prior ``Normal(0, 10)``
would give counts of ``exp(30)``; :func:`sbc` therefore draws and fits under
:data:`SBC_PRIORS` (log mean counts around 100), an override that changes
nothing else. Drawing intercepts from a realistic range but fitting under
``Normal(0, 10)`` is no calibration check: at low counts the two priors
disagree, and the ranks show it (mean rank 0.54 in the lowest base-mean fifth).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pymc as pm
from scipy import stats

from .data import CountData
from .errors import InputError
from .fit import fit as _fit
from .map_hyper import _hyper_functions, pack_u
from .model import layout, param_design
from .newton import linear_predictors
from .spec import Spec, load_spec

log = logging.getLogger(__name__)

#: Hyperparameters the draws use unless told otherwise: a DESeq2-like trend, 18% typical
#: structural zeros, donor sds around 0.3; ``pi`` puts 80% of genes in the null component
#: and spreads the rest evenly over the grid scales from 0.25 to 2 (natural log).
DEFAULT_HYPER = {"a0": 0.05, "a1": 1.0, "sigma_d": 0.5, "zi_mu": -1.5, "zi_sigma": 1.0,
                 "re_mu": np.log(0.3), "re_sigma": 0.5, "disp_shift": 0.0, "tau": 1.0}

#: Prior overrides :func:`sbc` draws and fits under: intercepts (and adjustment coefficients,
#: which share their prior) at realistic log mean counts.
SBC_PRIORS = {"intercept": {"mu": float(np.log(100.0)), "sigma": 1.5}}

#: Posterior draws of these coordinates are quadrature nodes on the MAP path (a discrete
#: approximation whose ranks cannot be uniform): they are ranked on the other paths only.
#: (Random-effect log sds are drawn smoothed around their nodes and are ranked.)
NODE_COORDINATES = ("log_dispersion",)


@dataclass
class PriorDraw:
    """Counts drawn from a template's prior predictive, with the true per-gene values.

    Attributes
    ----------
    data : CountData
        The simulated counts (genes with all-zero counts removed, as always).
    truth : dict of str to pandas.DataFrame
        Per posterior variable (``beta``, ``re``, ``log_dispersion``,
        ``logit_zero``, ``log_re_sd``) a genes x coordinates frame of true values.
    hyper : dict
        The hyperparameters the genes were drawn under.
    """

    data: CountData
    truth: dict[str, pd.DataFrame]
    hyper: dict = field(default_factory=dict)


def _default_pi(grid: np.ndarray) -> np.ndarray:
    pi = np.zeros(grid.size)
    alt = (grid >= 0.25) & (grid <= 2.0)
    pi[alt] = 0.2 / alt.sum()
    pi[0] = 0.8
    return pi


def draw_from_prior(model: str | Spec, samples: pd.DataFrame, design: str, n_genes: int = 2000,
                    hyper: dict | str | None = None, priors: dict | None = None, size_factor_sd: float = 0.2,
                    dispersion_by: str | None = None, zero_design: str | None = None,
                    random_seed: int | None = None) -> PriorDraw:
    """Draw genes' parameters from a template's prior and their counts from its likelihood.

    Parameters
    ----------
    model : str or Spec
        Template name or spec (its priors, grid and likelihood are used).
    samples : pandas.DataFrame
        Sample table (index: sample ids) with the design's columns.
    design : str
        Design formula, random effects included (``"~ group + (1|donor)"``).
    n_genes : int
    hyper : dict or "prior", optional
        Shared hyperparameters on their natural scale (``a0``, ``a1``,
        ``sigma_d``, ``zi_mu``, ``zi_sigma``, ``re_mu``, ``re_sigma``, ``pi``);
        missing ones take :data:`DEFAULT_HYPER`. Unknown names are an error.
        ``"prior"`` draws them from their hyperpriors (the fully Bayesian
        check: each data set is then one replicate of the hyperparameters).
    priors : dict, optional
        Overrides of the template's priors (as in :func:`bayescount.fit`); fit
        the draw with the same ones. Without an intercept override the
        intercepts come from ``Normal(0, 10)``: see :data:`SBC_PRIORS`.
    size_factor_sd : float
        Log-scale sd of the samples' size factors (drawn, then passed to the data as known).
    dispersion_by, zero_design : str, optional
        As in :func:`bayescount.fit`: one dispersion per level of a column
        (each drawn from the trend shifted by the level's ``disp_shift``), and
        covariates of the zero part (coefficients drawn from their priors).
        The returned data carry them, so a fit of it uses them too.
    random_seed : int, optional

    Returns
    -------
    PriorDraw

    Examples
    --------
    >>> import pandas as pd
    >>> samples = pd.DataFrame({"group": ["A"] * 3 + ["B"] * 3}, index=[f"s{i}" for i in range(6)])
    >>> d = draw_from_prior("nb_trend", samples, "~ group", n_genes=50, priors=SBC_PRIORS, random_seed=1)
    >>> d.truth["beta"].columns.tolist()
    ['Intercept', 'group[T.B]']
    """
    spec = load_spec(model, priors)
    rng = np.random.default_rng(random_seed)
    n_obs = len(samples)
    sf = np.exp(rng.normal(0.0, size_factor_sd, n_obs))
    sf /= np.exp(np.mean(np.log(sf)))
    # A placeholder matrix of ones gives the design, layout and parameter designs.
    ones = pd.DataFrame(np.ones((n_genes, n_obs), dtype=np.int64), index=_gene_ids(n_genes), columns=samples.index)
    def prepare(frame):
        d = CountData.from_pandas(frame, samples, design, size_factors=sf)
        return d.with_dispersion_by(dispersion_by).with_zero_design(zero_design)

    shape = prepare(ones)
    lay = layout(spec, shape)
    values = _hyper_values(lay, hyper, rng)
    hf = _hyper_functions(spec, lay)
    u = pack_u(lay, values)
    K, P, C = len(lay.names), lay.n_coef, lay.n_linear
    theta = np.zeros((n_genes, K))
    # Coefficients from their priors; the LFC prior's mixture one component per gene.
    loc, scale = hf.prior_fn(u, np.ones(n_genes))
    theta[:, :P] = rng.normal(loc[:, :P], scale[:, :P])
    if lay.mixture is not None and lay.slopes:
        comp = rng.choice(values["pi"].size, size=n_genes, p=values["pi"])
        theta[:, lay.slope_index] = rng.normal(0.0, 1.0, (n_genes, len(lay.slopes))) * lay.mixture.grid()[comp][:, None]
    X = shape.design.matrix
    truth = {}
    if lay.re_terms:
        log_sd = rng.normal(loc[:, K:], scale[:, K:])
        theta[:, P:C] = rng.normal(0.0, 1.0, (n_genes, C - P)) * np.exp(log_sd[:, list(lay.re_term_of)])
        X = np.hstack([X, shape.design.random.matrix])
        truth["log_re_sd"] = pd.DataFrame(log_sd, index=ones.index, columns=list(lay.re_terms))
    cols = [np.array(c) for c in lay.param_cols.values()]
    E = list(param_design(lay, shape).values())
    # Gene parameters from their prior, whose location may follow the genes' mean count
    # (the dispersion trend): that mean is the expected normalized count, found with the
    # parameters themselves (two passes; the standardized draws stay fixed).
    z = rng.standard_normal((n_genes, K - C))
    base_mean = np.exp(theta[:, :P] @ X[:, :P].T).mean(axis=1)
    for _ in range(2):
        loc, scale = hf.prior_fn(u, base_mean)
        theta[:, C:] = loc[:, C:K] + scale[:, C:K] * z
        eta, params = linear_predictors(theta, X, shape.offset, cols, E)
        mean = spec.likelihood.mean_var(np.exp(eta), params)[0]
        base_mean = (mean / sf[None, :]).mean(axis=1)
    counts = spec.likelihood.replicate(np.exp(eta), params, rng)
    frame = pd.DataFrame(np.asarray(counts, dtype=np.int64), index=ones.index, columns=samples.index)
    data = prepare(frame)
    truth["beta"] = pd.DataFrame(theta[:, :P], index=ones.index, columns=list(lay.coef))
    if lay.re_coef:
        truth["re"] = pd.DataFrame(theta[:, P:C], index=ones.index, columns=list(lay.re_coef))
    for pname, c in lay.param_cols.items():
        truth[pname] = pd.DataFrame(theta[:, c], index=ones.index, columns=list(lay.param_labels(pname)) or [pname])
    truth = {k: v.loc[data.genes] for k, v in truth.items()}
    return PriorDraw(data=data, truth=truth, hyper=values)


def _gene_ids(n: int) -> pd.Index:
    return pd.Index([f"gene{i:05d}" for i in range(n)], name="gene")


def _hyper_values(lay, hyper: dict | str | None, rng) -> dict:
    if isinstance(hyper, str):
        if hyper != "prior":
            raise InputError(f'hyper must be a dict of values or "prior", got {hyper!r}')
        return {name: np.atleast_1d(pm.draw(h.dist(), random_seed=rng)).astype(float) if h.size is not None or h.simplex
                else float(pm.draw(h.dist(), random_seed=rng)) for name, h in lay.hyper.items()}
    hyper = dict(hyper or {})
    known = set(lay.hyper)
    unknown = sorted(set(hyper) - known)
    if unknown:
        raise InputError(f"unknown hyperparameters {unknown} for this template; it has {sorted(known)}")
    out = {}
    for name, h in lay.hyper.items():
        if name == "pi":
            grid = lay.mixture.grid()
            pi = np.asarray(hyper.get("pi", _default_pi(grid)), dtype=float)
            if pi.shape != grid.shape or np.any(pi < 0) or not np.isclose(pi.sum(), 1.0):
                raise InputError(f"pi must be {grid.size} non-negative weights summing to 1 (one per grid scale)")
            out["pi"] = pi / pi.sum()
            continue
        v = np.asarray(hyper.get(name, DEFAULT_HYPER.get(name, 1.0)), dtype=float)
        if h.size is not None:
            v = np.broadcast_to(v, (h.size,)).copy()
        if h.positive and np.any(v <= 0):
            raise InputError(f"hyperparameter {name} must be positive, got {v}")
        out[name] = v
    return out


def sbc_ranks(result, truth: dict[str, pd.DataFrame], random_seed: int | None = None) -> pd.DataFrame:
    """Normalized ranks of true values among a fit's posterior draws, one row per gene and coordinate.

    A tie (a true value equal to some draws) is broken uniformly at random, so
    the ranks of a calibrated fit are uniform on (0, 1). On the MAP path the
    quadrature-node coordinates (:data:`NODE_COORDINATES`) are skipped.

    Returns
    -------
    pandas.DataFrame
        Columns ``variable, coord, gene, rank``.
    """
    rng = np.random.default_rng(random_seed)
    post = result.idata.posterior
    rows = []
    for var, frame in truth.items():
        if var not in post or (result.method == "map" and var in NODE_COORDINATES):
            continue
        da = post[var].stack(__s=("chain", "draw")).transpose("__s", ...)
        draws = np.asarray(da.sel(gene=frame.index.to_numpy()).values)  # (S, G[, coords])
        if draws.ndim == 2:
            draws = draws[:, :, None]
        true = frame.to_numpy()
        S = draws.shape[0]
        below = (draws < true[None]).sum(axis=0)
        ties = (draws == true[None]).sum(axis=0)
        rank = (below + rng.random(below.shape) * (ties + 1)) / (S + 1)
        for j, coord in enumerate(frame.columns):
            rows.append(pd.DataFrame({"variable": var, "coord": coord, "gene": frame.index, "rank": rank[:, j]}))
    return pd.concat(rows, ignore_index=True)


def sbc_summary(ranks: pd.DataFrame, n_bins: int = 20) -> pd.DataFrame:
    """Uniformity of each coordinate's ranks: chi-square over bins, KS distance, interval coverage.

    Columns: ``n``, ``chi2``, ``p_value`` (chi-square test of equal bins),
    ``ks`` (largest gap between the ranks' ECDF and the uniform's),
    ``cover_50`` and ``cover_90`` (share of true values inside the central
    50% and 90% posterior intervals; calibrated: 0.5 and 0.9), ``mean_rank``
    (0.5 unless the posteriors are shifted).
    """
    out = []
    for (var, coord), r in ranks.groupby(["variable", "coord"], sort=False):
        x = r["rank"].to_numpy()
        counts = np.histogram(x, bins=n_bins, range=(0.0, 1.0))[0]
        chi2, p = stats.chisquare(counts)
        ks = stats.kstest(x, "uniform").statistic
        out.append({"variable": var, "coord": coord, "n": x.size, "chi2": chi2, "p_value": p, "ks": ks,
                    "cover_50": np.mean(np.abs(x - 0.5) < 0.25), "cover_90": np.mean(np.abs(x - 0.5) < 0.45),
                    "mean_rank": x.mean()})
    return pd.DataFrame(out)


def sbc(model: str | Spec, samples: pd.DataFrame, design: str, n_genes: int = 2000, method: str = "map",
        hyper: dict | str | None = None, priors: dict | None = SBC_PRIORS, random_seed: int | None = None,
        n_bins: int = 20, n_datasets: int = 1, **fit_kwargs):
    """Simulation-based calibration of a template and fit path on a design.

    Draws ``n_genes`` genes from the template's prior (:func:`draw_from_prior`),
    fits them with ``method`` and ranks each true value among the posterior
    draws (:func:`sbc_ranks`); every gene is one replicate. Draw and fit use
    the template with ``priors`` (default :data:`SBC_PRIORS`) merged over it.
    With ``n_datasets`` > 1 that many data sets are drawn and fitted (with
    ``hyper="prior"``, each under its own hyperparameters) and their ranks
    pooled; gene ids in ``ranks`` then carry a ``"<data set>:"`` prefix.

    Returns
    -------
    summary : pandas.DataFrame
        :func:`sbc_summary` per coordinate.
    ranks : pandas.DataFrame
        The ranks themselves (for histograms).

    Examples
    --------
    >>> import pandas as pd
    >>> samples = pd.DataFrame({"group": ["A"] * 3 + ["B"] * 3}, index=[f"s{i}" for i in range(6)])
    >>> summary, ranks = sbc("nb_trend", samples, "~ group", n_genes=200, random_seed=1)
    >>> int(summary.set_index("coord").loc["group[T.B]", "n"])
    200
    """
    # The draws carry these, and the fit takes them from the data.
    options = {k: fit_kwargs.pop(k) for k in ("dispersion_by", "zero_design") if k in fit_kwargs}
    spec = load_spec(model, priors)
    root = np.random.SeedSequence(random_seed)
    parts = []
    for i, seq in enumerate([root] if n_datasets == 1 else root.spawn(n_datasets)):
        seeds = seq.generate_state(3)
        drawn = draw_from_prior(spec, samples, design, n_genes=n_genes, hyper=hyper, random_seed=int(seeds[0]),
                                **options)
        res = _fit(drawn.data, model=spec, method=method, random_seed=int(seeds[1]), **fit_kwargs)
        ranks = sbc_ranks(res, drawn.truth, random_seed=int(seeds[2]))
        if n_datasets > 1:
            ranks["gene"] = f"{i}:" + ranks["gene"].astype(str)
            log.info("sbc: data set %d/%d fitted", i + 1, n_datasets)
        parts.append(ranks)
    ranks = pd.concat(parts, ignore_index=True)
    return sbc_summary(ranks, n_bins), ranks
