"""Fit a template to count data by MAP + Laplace, ADVI or NUTS."""

from __future__ import annotations

import json
import logging
import time
from importlib.util import find_spec

import numpy as np
import pandas as pd
import xarray as xr

from .data import CountData
from .errors import InputError
from .fit_map import MapState, fit_map
from .map_draws import laplace_draws, pointwise_loglik, smooth_node_draws
from .model import build_model, layout
from .result import Fit, package_versions
from .spec import Spec, load_spec

log = logging.getLogger(__name__)

METHODS = ("map", "advi", "nuts")
#: NUTS back ends and the packages each needs (``numpyro``/``blackjax`` run the model through JAX).
NUTS_SAMPLERS = {"nutpie": ("nutpie",), "pymc": (), "numpyro": ("numpyro", "jax"), "blackjax": ("blackjax", "jax")}


def fit(
    data: CountData,
    model: str | Spec = "nb_trend",
    method: str = "map",
    random_seed: int | None = None,
    draws: int | None = None,
    priors: dict | None = None,
    log_likelihood: bool = False,
    progress: bool = False,
    tune: int = 1000,
    chains: int = 2,
    nuts_sampler: str | None = None,
    advi_steps: int = 20000,
    advi_learning_rate: float = 0.02,
    advi_minibatch: int | None = None,
    dispersion_by: str | None = None,
    zero_design: str | None = None,
    n_threads: int | None = None,
) -> Fit:
    """Fit a template to count data.

    Parameters
    ----------
    data : CountData
    model : str or Spec
        Catalog name (``"nb_trend"``, ``"poisson"``, ``"nb"``) or a spec.
    method : {"map", "advi", "nuts"}
        ``"map"``: genome-scale batched Newton with hyperparameters from a
        Laplace-approximate marginal likelihood, then per-gene Laplace.
        ``"advi"``: mean-field ADVI (Adam). ``"nuts"``: NUTS via nutpie when
        installed, else PyMC's sampler (see ``nuts_sampler``).
    random_seed : int, optional
        Seed for draws and samplers. If omitted one is drawn and recorded in
        the result's attrs, so any fit can be repeated.
    draws : int, optional
        Posterior draws (default 1000 per chain for NUTS/ADVI, 200 Laplace draws for MAP;
        the MAP path makes them on first access to the result's ``idata``, not for
        its LFC table).
    priors : dict, optional
        Overrides of the template's hyperparameters, ``{section: {key: value}}``.
    log_likelihood : bool
        Add the pointwise ``log_likelihood`` group (gene x obs per draw).
    progress : bool or "log"
        Show progress bars on long steps (on a terminal); ``"log"`` also
        logs done/total and ETA every 10 s when not on a terminal.
    nuts_sampler : {"nutpie", "pymc", "numpyro", "blackjax"}, optional
        NUTS back end. ``"numpyro"`` (``pip install "bayescount[jax]"``)
        compiles the model with JAX, the path to GPUs: JAX uses one when its
        CUDA build is installed.
    advi_steps, advi_learning_rate : int, float
        ADVI's Adam steps (it stops earlier when the parameters settle) and learning rate.
    advi_minibatch : int, optional
        ADVI on random batches of this many observations (samples or cells)
        per step, the likelihood scaled to all of them: for cell-level data
        too large for full-batch gradients. Batches add noise, so every step
        in ``advi_steps`` is run; give more steps than full-batch ADVI needs.
    dispersion_by : str, optional
        A sample-table factor whose levels get their own dispersion per gene
        (each shrunk to the template's dispersion prior); same as
        ``data.with_dispersion_by(column)``.
    zero_design : str, optional
        Covariates of the zero probability of zero-inflated and hurdle
        templates, e.g. ``"~ group"``; same as ``data.with_zero_design(formula)``.
    n_threads : int, optional
        Threads for the MAP path's per-gene work (contiguous gene chunks,
        two per thread, each of at least 12,000 gene x observation values). Default: the
        ``BAYESCOUNT_THREADS`` environment variable, else every CPU this
        process may use. Answers agree to rounding (~1e-6) whatever the number.

    Returns
    -------
    Fit

    Examples
    --------
    >>> from bayescount import simulate, fit
    >>> sim = simulate(n_genes=100, n_per_group=3, random_seed=2)
    >>> res = fit(sim.data, method="map", random_seed=2)
    >>> res.method, res.idata.attrs["spec_hash"] == res.spec.hash
    ('map', True)
    """
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; use one of {METHODS}")
    if not isinstance(data, CountData):
        raise InputError("data must be a CountData (see CountData.from_pandas / from_csv)")
    if nuts_sampler is not None:
        if nuts_sampler not in NUTS_SAMPLERS:
            raise InputError(f"unknown nuts_sampler {nuts_sampler!r}; use one of {tuple(NUTS_SAMPLERS)}")
        missing = [p for p in NUTS_SAMPLERS[nuts_sampler] if find_spec(p) is None]
        if missing:
            extra = {"nutpie": "fast", "numpyro": "jax"}.get(nuts_sampler)
            hint = f'pip install "bayescount[{extra}]"' if extra else f"pip install {' '.join(missing)}"
            raise InputError(f"nuts_sampler={nuts_sampler!r} needs {', '.join(missing)}, which is not installed: {hint}")
    if advi_minibatch is not None and method != "advi":
        raise InputError(f"advi_minibatch applies to method='advi', not {method!r}")
    if data.weights is not None and log_likelihood and method != "map":
        raise InputError("log_likelihood with observation weights is available on the MAP path only for now")
    if dispersion_by is not None:
        data = data.with_dispersion_by(dispersion_by)
    if zero_design is not None:
        data = data.with_zero_design(zero_design)
    spec = load_spec(model, priors) if not isinstance(model, Spec) else model.with_overrides(priors)
    seed = int(np.random.SeedSequence().entropy % (2**31)) if random_seed is None else int(random_seed)
    lay = layout(spec, data)
    t0 = time.perf_counter()
    if method == "map":
        state = fit_map(spec, data, progress=progress, n_threads=n_threads)
        tree, pending = _map_tree(state, data, lay, draws or 200, seed, log_likelihood, spec, n_threads=n_threads)
        extra = {"hyper": json.dumps({k: np.asarray(v).tolist() for k, v in state.hyper.items()}),
                 "timings": json.dumps(state.timings), "n_sweeps": state.n_sweeps}
    else:
        pending = None
        tree, extra = _pymc_tree(spec, data, method, seed, draws, log_likelihood, progress, tune, chains,
                                 nuts_sampler, advi_steps, advi_learning_rate, advi_minibatch)
    tree["constant_data"] = xr.DataTree(_constant_data(data))
    tree.attrs.update(
        {
            "method": method,
            "spec": spec.to_json(),
            "spec_hash": spec.hash,
            "model": spec.name,
            "random_seed": seed,
            "versions": json.dumps(package_versions()),
            "design": data.design.formula,
            "sample_columns": json.dumps(list(data.samples.columns)),
            "hyper_names": json.dumps(list(lay.hyper)),
            "n_dropped_all_zero": data.n_dropped_zero,
            "dispersion_by": "" if data.dispersion_groups is None else data.dispersion_groups.column,
            "zero_design": "" if data.zero_design is None else data.zero_design.formula,
            "wall_seconds": time.perf_counter() - t0,
            **extra,
        }
    )
    result = Fit(idata=tree, spec=spec, posterior=pending)
    # The design in hand is the one stored: the answers need not rebuild it from the formula.
    result.__dict__["design"] = data.design
    return result


def _labels(values, name: str) -> pd.Index:
    """Gene or observation ids as an object-dtype index: xarray takes it as is (from a plain
    object array it infers the type of every label, ~1.5 ms per dataset at 20,000 genes)."""
    return pd.Index(np.asarray(values, dtype=object), dtype=object, name=name)


def _constant_data(data: CountData) -> xr.Dataset:
    ds = xr.Dataset(
        {
            "design": (("obs", "coef"), data.design.matrix),
            "offset": ("obs", data.offset),
            "size_factors": ("obs", data.size_factors),
            "base_mean": ("gene", data.base_mean),
            "flags": ("gene", data.flags.astype(str).astype(object)),
            **({} if data.weights is None else {"weights": (("gene", "obs"), data.weights)}),
            **({} if data.zero_design is None else {"zero_design": (("obs", "zero_coef"), data.zero_design.matrix)}),
        },
        coords={"gene": _labels(data.genes, "gene"), "obs": _labels(data.obs, "obs"),
                "coef": list(data.design.coef),
                **({} if data.zero_design is None else {"zero_coef": list(data.zero_design.coef)})},
    )
    for col in data.samples.columns:
        values = data.samples[col]
        arr = values.astype(str).to_numpy(dtype=object) if not pd.api.types.is_numeric_dtype(values) else values.to_numpy()
        ds[f"sample__{col}"] = ("obs", arr)
    return ds


def _observed(data: CountData) -> xr.Dataset:
    return xr.Dataset(
        {"counts": (("gene", "obs"), data.counts)},
        coords={"gene": _labels(data.genes, "gene"), "obs": _labels(data.obs, "obs")},
    )


def _map_tree(state: MapState, data, lay, draws, seed, log_likelihood, spec, n_threads=1):
    """The MAP fit's groups, and a function that adds its ``posterior`` (Laplace draws) to them.

    The draws are a function of the ``laplace`` group and the seed, so they
    are made when first asked for (:class:`~bayescount.result.Fit` calls the
    function on first access to ``idata``): an LFC table does not need them.
    With ``log_likelihood`` they are made now and the function is None.
    """
    genes = _labels(data.genes, "gene")
    coords = {"gene": genes, "coef": list(lay.coef)}
    if lay.slopes:
        coords["slope"] = list(lay.slopes)
    if lay.mixture is not None:
        coords["scale"] = lay.mixture.grid()
    if lay.re_terms:
        coords["re_coef"] = list(lay.re_coef)
        coords["re_term"] = list(lay.re_terms)
    if lay.disp_levels:
        coords["disp_level"] = list(lay.disp_levels)
        coords["shifted_level"] = list(lay.disp_levels[1:])
    if lay.zero_coef:
        coords["zero_coef"] = list(lay.zero_coef)
    names = list(lay.names)
    laplace = xr.Dataset(
        {
            "mode": (("gene", "param"), state.map_mode),
            "cov": (("gene", "param", "param_"), state.map_cov),
            "mix_mode": (("gene", "component", "param"), state.mode),
            "mix_cov": (("gene", "component", "param", "param_"), state.cov),
            "mix_weight": (("gene", "component"), state.weights),
            "prior_component": (("gene", "component"), state.prior_component),
            "mle_mode": (("gene", "param"), state.mle_mode),
            "mle_cov": (("gene", "param", "param_"), state.mle_cov),
        },
        # The posterior's coordinates too, so answers read them without making the draws.
        coords={**coords, "param": names, "param_": names, "component": np.arange(state.mode.shape[1])},
    )
    laplace.attrs["note"] = ("mode/cov: posterior mode and its Laplace covariance; the posterior used for answers is "
                             "sum_c mix_weight_c N(mix_mode_c, mix_cov_c) per gene over its heaviest (dispersion "
                             "quadrature node x LFC-prior component) pairs; prior_component names the component; mle_* is the fit with the coefficient prior widened "
                             "(dispersion integrated out), used for Wald p-values")
    map_stats = xr.Dataset(
        {"converged": ("gene", state.converged), "n_iter": ("gene", state.n_iter), "loglik": ("gene", state.loglik),
         "log_evidence": ("gene", state.log_evidence)},
        coords={"gene": genes},
    )
    groups = {"laplace": laplace, "map_stats": map_stats, "observed_data": _observed(data)}

    def posterior():
        theta, slot = laplace_draws(state, draws, seed, return_slots=True, n_threads=n_threads)  # (draw, gene, K)
        return _map_posterior(state, lay, theta, slot, draws, seed, coords), theta

    def add_posterior(tree: xr.DataTree) -> None:
        t0 = time.perf_counter()
        tree["posterior"] = xr.DataTree(posterior()[0])
        if "timings" in tree.attrs:
            timings = json.loads(tree.attrs["timings"])
            timings["laplace_draws"] = time.perf_counter() - t0
            tree.attrs["timings"] = json.dumps(timings)

    if not log_likelihood:
        return xr.DataTree.from_dict(groups), add_posterior
    post, theta = posterior()
    ll = pointwise_loglik(spec, data, lay, theta)
    groups["log_likelihood"] = xr.Dataset(
        {"counts": (("chain", "draw", "gene", "obs"), ll[None])},
        coords={"chain": [0], "draw": np.arange(draws), "gene": genes, "obs": _labels(data.obs, "obs")},
    )
    return xr.DataTree.from_dict({"posterior": post, **groups}), None


def _map_posterior(state: MapState, lay, theta, slot, draws, seed, coords) -> xr.Dataset:
    """The ``posterior`` group from Laplace draws ``theta`` (draw, gene, K) and their slots (draw, gene)."""
    P, L = lay.n_coef, lay.n_linear
    post = {"beta": (("chain", "draw", "gene", "coef"), theta[None, :, :, :P])}
    if lay.re_terms:
        post["re"] = (("chain", "draw", "gene", "re_coef"), theta[None, :, :, P:L])
        # Each draw's scales start at its slot's quadrature node, smoothed into a continuous
        # posterior with the nodes' mean and variance (their own draws are discrete).
        log_sd = smooth_node_draws(state.re_log_sd, state.weights, slot, [seed, 1])  # (draw, gene, T)
        post["log_re_sd"] = (("chain", "draw", "gene", "re_term"), log_sd[None])
        post["re_sd"] = (("chain", "draw", "gene", "re_term"), np.exp(log_sd)[None])
    for pname, cols in lay.param_cols.items():
        if lay.param_dim(pname) is not None:
            post[pname] = (("chain", "draw", "gene", lay.param_dim(pname)), theta[None, :, :, cols])
        else:
            post[pname] = (("chain", "draw", "gene"), theta[None, :, :, cols[0]])
    if "log_dispersion" in lay.gene_params:
        post["dispersion"] = (post["log_dispersion"][0], np.exp(post["log_dispersion"][1]))
    for name, value in state.hyper.items():
        value = np.asarray(value)
        if value.ndim == 0:
            post[name] = (("chain", "draw"), np.full((1, draws), float(value)))
        else:
            dim = lay.hyper[name].dims
            post[name] = (("chain", "draw", dim), np.broadcast_to(value, (1, draws, value.size)).copy())
    posterior = xr.Dataset(post, coords={"chain": [0], "draw": np.arange(draws), **coords})
    posterior.attrs["note"] = "Laplace draws around per-gene modes; shared hyperparameters are point estimates"
    return posterior


def _pymc_tree(spec, data, method, seed, draws, log_likelihood, progress, tune, chains, nuts_sampler,
               advi_steps, advi_learning_rate, advi_minibatch=None):
    import pymc as pm

    from . import _kernels  # noqa: F401

    model = build_model(spec, data, minibatch=advi_minibatch, random_seed=seed)
    extra = {}
    with model:
        if method == "nuts":
            sampler = nuts_sampler or ("nutpie" if find_spec("nutpie") else "pymc")
            tree = pm.sample(draws=draws or 1000, tune=tune, chains=chains, random_seed=seed,
                             nuts_sampler=sampler, progressbar=bool(progress))
            extra["nuts_sampler"] = sampler
        else:
            from pymc.variational.callbacks import CheckParametersConvergence

            # Minibatch gradients never let the parameters settle to a tolerance: run every step.
            callbacks = [] if advi_minibatch else [CheckParametersConvergence(diff="absolute", tolerance=1e-3, every=500)]

            # Start narrow: with wide priors (a tidy model's Normal(0, 10)) the default initial
            # sd of 0.7 on the standardized scale puts exp(eta) far out of range.
            start_sigma = {v.name: 0.05 for v in model.value_vars}
            approx = pm.fit(n=advi_steps, method="advi", obj_optimizer=pm.adam(learning_rate=advi_learning_rate),
                            random_seed=seed, progressbar=bool(progress), start_sigma=start_sigma,
                            callbacks=callbacks)
            tree = approx.sample(draws or 1000, random_seed=seed)
            hist = np.asarray(approx.hist, dtype=float)
            tree["sample_stats"] = xr.DataTree(xr.Dataset({"loss": ("advi_step", hist)}))
            extra["advi_steps_run"] = int(hist.size)
            extra["advi_converged"] = int(_loss_plateaued(hist))
            if advi_minibatch:
                extra["advi_minibatch"] = int(advi_minibatch)
            if not extra["advi_converged"]:
                log.warning("ADVI loss was still falling after %d steps; raise advi_steps", hist.size)
        if log_likelihood and advi_minibatch is None:
            pm.compute_log_likelihood(tree, model=model, progressbar=False)
    if log_likelihood and advi_minibatch is not None:
        # Pointwise terms are over all observations, not a batch: the full-data model
        # (built outside the minibatch model's context, or its names would clash).
        pm.compute_log_likelihood(tree, model=build_model(spec, data), progressbar=False)
    post = tree["posterior"].to_dataset()
    post = post.drop_vars([v for v in post.data_vars if v.endswith("_z")])
    tree["posterior"] = xr.DataTree(post)
    tree["observed_data"] = xr.DataTree(_observed(data))
    return tree, extra


def _loss_plateaued(hist: np.ndarray, window: int = 1000, rtol: float = 1e-3) -> bool:
    """The mean loss of the last window is within ``rtol`` of the window before it."""
    if hist.size < 2 * window:
        return False
    last, prev = hist[-window:].mean(), hist[-2 * window : -window].mean()
    return abs(prev - last) <= rtol * abs(last)
