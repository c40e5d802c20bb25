"""Build the PyMC model of a template: a pure function of (spec, data).

All genes live in one vectorized graph with dims ``gene x obs``. Per-gene
quantities (coefficients and the likelihood's gene parameters such as the
log-dispersion) get ``Normal(loc, scale)`` priors from their parts, and the
shared hyperparameters get the priors their parts declare. The same
:func:`prior_loc_scale` is used by the MAP path, so the priors are written once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from .data import CountData
from .design import INTERCEPT
from .errors import InputError
from .parts import Hyper, NormalLearnedScale, ScaleMixture
from .spec import Spec


@dataclass(frozen=True)
class Layout:
    """Which per-gene coordinates exist and which shared hyperparameters drive them.

    Per-gene coordinates (``names``) are the design coefficients, the
    group-level effects (``re_coef``) and the likelihood's gene parameters
    (e.g. ``log_dispersion``), in that order. The log scales of the
    random-effect terms (``re_terms``) are per-gene too but live outside
    that vector: the MAP path integrates them by quadrature, so its prior
    table (:func:`prior_loc_scale`) lists them after ``names``.
    """

    coef: tuple[str, ...]
    slopes: tuple[str, ...]
    gene_params: tuple[str, ...]
    hyper: dict[str, Hyper]
    mixture: ScaleMixture | None = None
    re_coef: tuple[str, ...] = ()
    re_terms: tuple[str, ...] = ()
    re_term_of: tuple[int, ...] = ()

    @property
    def slope_index(self) -> list[int]:
        return [self.coef.index(c) for c in self.slopes]

    @property
    def scale_hyper(self) -> dict[str, Hyper]:
        """Hyperparameters fitted by the marginal scale criterion (not mixture weights)."""
        return {k: h for k, h in self.hyper.items() if not h.simplex}

    disp_levels: tuple[str, ...] = ()
    zero_coef: tuple[str, ...] = ()

    def param_labels(self, pname: str) -> tuple[str, ...]:
        """Labels of a gene parameter's coordinates: levels (``dispersion_by``), zero-design columns, or none."""
        if pname == "log_dispersion":
            return self.disp_levels
        if pname == "logit_zero":
            return self.zero_coef
        return ()

    def param_dim(self, pname: str) -> str | None:
        """The extra dimension of a gene parameter with several coordinates, else None."""
        if not self.param_labels(pname):
            return None
        return "disp_level" if pname == "log_dispersion" else "zero_coef"

    @property
    def param_names(self) -> tuple[str, ...]:
        """Per-gene coordinates of the likelihood's gene parameters (one per level with ``dispersion_by``)."""
        out = []
        for pname in self.gene_params:
            labels = self.param_labels(pname)
            out.extend(f"{pname}[{lv}]" for lv in labels) if labels else out.append(pname)
        return tuple(out)

    @property
    def param_cols(self) -> dict[str, list[int]]:
        """Gene parameter -> its coordinates in ``names``."""
        out, k = {}, self.n_linear
        for pname in self.gene_params:
            n = max(len(self.param_labels(pname)), 1)
            out[pname] = list(range(k, k + n))
            k += n
        return out

    @property
    def names(self) -> tuple[str, ...]:
        return self.coef + self.re_coef + self.param_names

    @property
    def n_coef(self) -> int:
        return len(self.coef)

    @property
    def n_linear(self) -> int:
        """Coordinates entering the linear predictor (fixed and group-level effects)."""
        return len(self.coef) + len(self.re_coef)

    @property
    def re_index(self) -> np.ndarray:
        return np.arange(len(self.coef), self.n_linear)

    @property
    def sliced(self) -> list[int]:
        """Coordinates whose hyperparameters the MAP path fits from likelihood slices.

        The zero part's intercept logit: a handful of Bernoulli-like
        observations give it a skewed likelihood, which Gaussian summaries
        flatten (they put the spread of the genes' zero probabilities 18% low
        in simulation-based calibration).
        """
        return self.param_cols["logit_zero"][:1] if "logit_zero" in self.param_cols else []

    @property
    def integrated(self) -> list[int]:
        """Prior-table coordinates the MAP path integrates by quadrature.

        The random-effect log scales (if any), then the first gene parameter
        (the log-dispersion, one coordinate per level with ``dispersion_by``);
        the rest is Laplace-approximated.
        """
        K = len(self.names)
        disp = self.param_cols[self.gene_params[0]] if self.gene_params else []
        if self.re_terms:
            return list(range(K, K + len(self.re_terms))) + disp
        return disp


def layout(spec: Spec, data: CountData) -> Layout:
    coef = tuple(data.design.coef)
    # Only the last term's coefficients get the LFC prior: adjustment terms (donor, batch)
    # would otherwise put every gene in a non-null component and void the lfsr's null.
    slopes = tuple(c for c in coef if c in data.design.shrunk)
    if isinstance(spec.coefficients, (NormalLearnedScale, ScaleMixture)) and INTERCEPT not in coef:
        raise InputError(
            f"design {data.design.formula!r} has no intercept, but template {spec.name!r} shrinks every "
            "non-intercept coefficient toward 0; use treatment coding like '~ group' and ask for any "
            "level-vs-level contrast with [factor, level, reference]"
        )
    hyper: dict[str, Hyper] = {}
    if slopes:
        hyper.update(spec.coefficients.hyper(len(slopes)))
    for pname in spec.likelihood.gene_params:
        hyper.update(spec.prior(spec.likelihood.prior_slots[pname]).hyper(0))
    mixture = spec.coefficients if isinstance(spec.coefficients, ScaleMixture) and slopes else None
    random = data.design.random
    if random is not None and spec.random_effects is None:
        raise InputError(
            f"the design {data.design.formula!r} has random effects {list(random.terms)}, but template "
            f"{spec.name!r} has none; use a template with a [random_effects] part (nb_donor, zinb_donor)"
        )
    if random is None and spec.random_effects is not None:
        raise InputError(
            f"template {spec.name!r} needs a random-effect term in the design, e.g. '~ condition + (1|donor)'"
        )
    re = {}
    if random is not None:
        hyper.update(spec.random_effects.hyper(random.n_terms))
        re = {"re_coef": tuple(random.columns), "re_terms": tuple(random.terms),
              "re_term_of": tuple(int(t) for t in random.term_of)}
    disp_levels = ()
    if data.dispersion_groups is not None:
        if "log_dispersion" not in spec.likelihood.gene_params:
            raise InputError(f"template {spec.name!r} has no dispersion; dispersion_by needs an NB-family template "
                             "(nb_trend, zinb_trend, hurdle_trend, nb_donor, ...)")
        disp_levels = data.dispersion_groups.levels
        if hasattr(spec.dispersion, "level_hyper"):
            hyper.update(spec.dispersion.level_hyper(len(disp_levels)))
    zero_coef = ()
    if data.zero_design is not None:
        if "logit_zero" not in spec.likelihood.gene_params:
            raise InputError(f"template {spec.name!r} has no zero part; zero-part covariates need a zero-inflated "
                             "or hurdle template (zinb_trend, hurdle_trend, zinb_donor, zinb, hurdle)")
        zero_coef = tuple(data.zero_design.coef)
    return Layout(coef=coef, slopes=slopes, gene_params=tuple(spec.likelihood.gene_params), hyper=hyper,
                  mixture=mixture, disp_levels=disp_levels, zero_coef=zero_coef, **re)


def param_design(lay: Layout, data: CountData) -> dict[str, np.ndarray | None]:
    """Gene parameter -> its (obs, coordinates) design, or None for one value per gene.

    ``dispersion_by`` gives a one-hot map of samples to levels; a zero-part
    formula gives its design matrix. The MAP kernels and the PyMC model both
    use it, so per-observation parameters are ``theta[:, cols] @ E.T``.
    """
    out = {}
    for pname, cols in lay.param_cols.items():
        if len(cols) == 1:
            out[pname] = None
        elif pname == "log_dispersion":
            out[pname] = np.eye(len(cols))[data.dispersion_groups.codes]
        else:
            out[pname] = data.zero_design.matrix
    return out


def prior_loc_scale(spec: Spec, lay: Layout, hyper: dict, base_mean) -> tuple[list, list]:
    """Prior ``loc`` and ``scale`` of every per-gene coordinate, in layout order.

    Each entry is a tensor broadcastable to ``(n_genes,)``: ``names`` first
    (group-level effects get a placeholder ``Normal(0, 1)``: their scale is
    the gene's own random-effect scale), then one entry per random-effect
    term for its log scale.
    """
    ctx = {"base_mean": base_mean}
    locs, scales = [], []
    if lay.slopes:
        s_loc, s_scale = spec.coefficients.loc_scale(hyper, ctx)
        s_loc = pt.broadcast_to(s_loc, (len(lay.slopes),))
        s_scale = pt.broadcast_to(s_scale, (len(lay.slopes),))
    i_loc, i_scale = spec.intercept.loc_scale(hyper, ctx)
    k = 0
    for c in lay.coef:
        if c not in lay.slopes:
            locs.append(i_loc)
            scales.append(i_scale)
        else:
            locs.append(s_loc[k])
            scales.append(s_scale[k])
            k += 1
    locs.extend([pt.as_tensor(0.0)] * len(lay.re_coef))
    scales.extend([pt.as_tensor(1.0)] * len(lay.re_coef))
    for pname, cols in lay.param_cols.items():
        # Per-level dispersions share the gene's prior: shrunk to the trend, not to each other.
        part = spec.prior(spec.likelihood.prior_slots[pname])
        loc, scale = part.loc_scale(hyper, ctx)
        if pname == "logit_zero" and len(cols) > 1:
            # Zero-part covariates: the intercept keeps the part's prior, the rest a fixed one.
            c_loc, c_scale = part.coef_loc_scale()
            locs.extend([loc] + [c_loc] * (len(cols) - 1))
            scales.extend([scale] + [c_scale] * (len(cols) - 1))
            continue
        shift = hyper.get("disp_shift") if len(cols) > 1 else None
        locs.extend([loc if j == 0 or shift is None else loc + shift[j - 1] for j in range(len(cols))])
        scales.extend([scale] * len(cols))
    if lay.re_terms:
        T = len(lay.re_terms)
        r_loc, r_scale = spec.random_effects.loc_scale(hyper, ctx)
        r_loc, r_scale = pt.broadcast_to(r_loc, (T,)), pt.broadcast_to(r_scale, (T,))
        locs.extend(r_loc[t] for t in range(T))
        scales.extend(r_scale[t] for t in range(T))
    return locs, scales


def build_model(spec: Spec, data: CountData, minibatch: int | None = None, random_seed: int | None = None) -> pm.Model:
    """The template's PyMC model for these data.

    Per-gene coordinates are non-centered (``*_z`` standard normals) so that
    NUTS and ADVI see a well-conditioned geometry when genes carry little
    information; ``beta`` and the gene parameters are deterministics.

    With ``minibatch`` the likelihood sees a random batch of that many
    observations (samples or cells; all genes) at each evaluation, scaled to
    the full data (``total_size``), for stochastic ADVI on data too large
    for full-batch gradients; ``random_seed`` seeds the batch stream.

    Examples
    --------
    >>> from bayescount import simulate, load_spec
    >>> sim = simulate(n_genes=20, n_per_group=3, random_seed=1)
    >>> m = build_model(load_spec("nb_trend"), sim.data)
    >>> sorted(m.named_vars)[:4]
    ['a0', 'a1', 'base_mean', 'beta']
    """
    lay = layout(spec, data)
    coords = {"gene": list(data.genes), "obs": list(data.obs), "coef": list(lay.coef)}
    if lay.slopes:
        coords["slope"] = list(lay.slopes)
    if lay.mixture is not None:
        coords["scale"] = [f"{s:.4g}" for s in lay.mixture.grid()]
    if lay.re_terms:
        coords["re_coef"] = list(lay.re_coef)
        coords["re_term"] = list(lay.re_terms)
    if lay.disp_levels:
        coords["disp_level"] = list(lay.disp_levels)
        coords["shifted_level"] = list(lay.disp_levels[1:])
    if lay.zero_coef:
        coords["zero_coef"] = list(lay.zero_coef)
    E = param_design(lay, data)
    with pm.Model(coords=coords) as model:
        # With a minibatch every observation-indexed array is a jointly sliced batch.
        mb = None if minibatch is None else _minibatch(minibatch, data, lay, E, random_seed)
        X = pm.Data("design", data.design.matrix, dims=("obs", "coef")) if mb is None else mb["X"]
        offset = pm.Data("offset", data.offset, dims="obs") if mb is None else mb["offset"]
        base_mean = pm.Data("base_mean", data.base_mean, dims="gene")
        hyper = {name: h.rv(name) for name, h in lay.hyper.items()}
        locs, scales = prior_loc_scale(spec, lay, hyper, base_mean)
        P = lay.n_coef
        fixed = [i for i, c in enumerate(lay.coef) if lay.mixture is None or c not in lay.slopes]
        if lay.mixture is not None:
            model.add_coord("fixed_coef", [lay.coef[i] for i in fixed])
        z = pm.Normal("beta_z", 0.0, 1.0, dims=("gene", "coef" if lay.mixture is None else "fixed_coef"))
        loc_b = pt.stack([pt.broadcast_to(locs[i], (data.n_genes,)) for i in fixed], axis=1)
        scale_b = pt.stack([pt.broadcast_to(scales[i], (data.n_genes,)) for i in fixed], axis=1)
        beta = pt.zeros((data.n_genes, P))
        beta = pt.set_subtensor(beta[:, fixed], loc_b + scale_b * z)
        if lay.mixture is not None:
            # Mixture slopes are centred free variables with the mixture log-density
            # added as a potential.
            slopes = pm.Flat("beta_slope", dims=("gene", "slope"))  # starts at 0, its support point
            pm.Potential("beta_slope_prior", lay.mixture.logp(slopes, hyper["pi"]))
            beta = pt.set_subtensor(beta[:, lay.slope_index], slopes)
        beta = pm.Deterministic("beta", beta, dims=("gene", "coef"))
        params, columns, dims = {}, {}, {}
        for pname, cols in lay.param_cols.items():
            k = cols[0]
            dim = lay.param_dim(pname)
            if dim is not None:
                # Several coordinates (levels of dispersion_by, zero-part covariates): each
                # observation's value is its row of the parameter's design times them.
                dims[pname] = ("gene", dim)
                loc = pt.stack([pt.broadcast_to(locs[c], (data.n_genes,)) for c in cols], axis=1)
                scale = pt.stack([pt.broadcast_to(scales[c], (data.n_genes,)) for c in cols], axis=1)
                zp = pm.Normal(f"{pname}_z", 0.0, 1.0, dims=dims[pname])
                params[pname] = pm.Deterministic(pname, loc + scale * zp, dims=dims[pname])
                E_p = pt.as_tensor(E[pname]) if mb is None else mb[f"E:{pname}"]
                columns[pname] = pt.dot(params[pname], E_p.T)
            else:
                dims[pname] = "gene"
                zp = pm.Normal(f"{pname}_z", 0.0, 1.0, dims="gene")
                params[pname] = pm.Deterministic(pname, locs[k] + scales[k] * zp, dims="gene")
                columns[pname] = params[pname][:, None]
        eta = offset[None, :] + pt.dot(beta, X.T)
        if lay.re_terms:
            eta = eta + _random_effects(lay, data, locs, scales, None if mb is None else mb["Z"])
        observed, obs_dims, extra, scale_w = data.counts, ("gene", "obs"), {}, 1.0
        if mb is not None:
            # A minibatch must be observed exactly as sliced (obs leading): the likelihood runs on (obs, gene).
            eta, columns = eta.T, {k: v.T for k, v in columns.items()}
            observed, obs_dims = mb["counts"], None
            extra, scale_w = {"total_size": [data.n_obs, None]}, data.n_obs / minibatch
        if data.weights is None:
            spec.likelihood.observe("counts", eta, columns, observed=observed, dims=obs_dims, **extra)
        else:
            # Weighted observations: each log-density term times its weight, as a potential.
            W = pm.Data("weights", data.weights, dims=("gene", "obs")) if mb is None else mb["W"]
            dist = spec.likelihood.dist(eta, columns)
            pm.Potential("weighted_counts", scale_w * pt.sum(W * pm.logp(dist, observed)))
        spec.likelihood.deterministics(params, dims)
    return model


def _minibatch(size: int, data: CountData, lay: Layout, E: dict, random_seed) -> dict:
    """Jointly sliced random batches of the observation-indexed arrays, by name.

    ``X``, ``offset``, ``counts`` and ``W`` (both (obs, gene)), ``Z`` (random-effect
    design) and ``E:<param>`` (gene-parameter designs) where the model has them.
    """
    from pytensor.graph.traversal import ancestors
    from pytensor.tensor.random.type import RandomGeneratorType

    if not 1 <= size < data.n_obs:
        raise InputError(f"minibatch={size} must be between 1 and the number of observations - 1 ({data.n_obs - 1}); "
                         "drop it for full-batch ADVI")
    if data.counts.max(initial=0) >= 2**31:
        raise InputError("counts above 2**31 - 1 cannot be minibatched (PyMC observes integer batches as int32); "
                         "drop advi_minibatch")
    # PyMC casts integer observations to int32; a batch must already be int32 to stay observable.
    arrays = {"X": data.design.matrix, "offset": data.offset, "counts": data.counts.T.astype(np.int32)}
    if lay.re_terms:
        arrays["Z"] = data.design.random.matrix
    if data.weights is not None:
        arrays["W"] = data.weights.T
    arrays.update({f"E:{k}": v for k, v in E.items() if v is not None})
    out = dict(zip(arrays, pm.Minibatch(*arrays.values(), batch_size=int(size))))
    # The batch stream is a shared generator in the graph: seed it so a fit can be repeated.
    for var in ancestors(list(out.values())):
        if isinstance(getattr(var, "type", None), RandomGeneratorType) and hasattr(var, "set_value"):
            var.set_value(np.random.default_rng(random_seed))
    return out


def _random_effects(lay: Layout, data: CountData, locs, scales, Z=None):
    """Non-centred group-level effects with per-gene log scales; returns their (gene, obs) linear predictor."""
    G, T, K = data.n_genes, len(lay.re_terms), len(lay.names)
    if Z is None:
        Z = pm.Data("re_design", data.design.random.matrix, dims=("obs", "re_coef"))
    loc = pt.stack([pt.broadcast_to(locs[K + t], (G,)) for t in range(T)], axis=1)
    scale = pt.stack([pt.broadcast_to(scales[K + t], (G,)) for t in range(T)], axis=1)
    z_sd = pm.Normal("log_re_sd_z", 0.0, 1.0, dims=("gene", "re_term"))
    log_sd = pm.Deterministic("log_re_sd", loc + scale * z_sd, dims=("gene", "re_term"))
    pm.Deterministic("re_sd", pt.exp(log_sd), dims=("gene", "re_term"))
    z = pm.Normal("re_z", 0.0, 1.0, dims=("gene", "re_coef"))
    b = pm.Deterministic("re", pt.exp(log_sd)[:, list(lay.re_term_of)] * z, dims=("gene", "re_coef"))
    return pt.dot(b, Z.T)


__all__ = ["build_model", "layout", "param_design", "prior_loc_scale", "Layout"]
