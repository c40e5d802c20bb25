"""The closed registry of model parts that template specs are resolved through.

A spec names parts and sets their hyperparameters; it never contains code.
Each part is a frozen dataclass whose fields are its default
hyperparameters, so defaults are declared once, beside the code that uses
them. Overrides are merged over a copy and unknown keys are errors.

Two kinds of parts exist:

* **likelihoods** turn a linear predictor ``eta`` (gene x obs) and per-gene
  parameters into a PyMC distribution. The same ``dist`` method feeds the
  PyMC model and, through ``kernel_logp``, the MAP path's compiled
  derivatives. A part may spell ``kernel_logp`` out itself where PyMC's
  logp carries bound checks and limit switches that cost more than the
  density (the NB's costs 4x); tests hold the two equal.
* **gene priors** put ``Normal(loc, scale)`` on a per-gene quantity
  (intercepts, slopes, log-dispersions), where ``loc`` and ``scale`` may
  depend on shared hyperparameters learned across genes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pymc as pm
import pytensor.tensor as pt
from scipy import special

from ._kernels import log_rising

# --------------------------------------------------------------------- hyperparameters


@dataclass(frozen=True)
class Hyper:
    """A shared hyperparameter: its prior family and parameters.

    ``rv(name)`` creates it inside a PyMC model; ``dist()`` gives the same
    prior unnamed, for the MAP path's marginal criterion, which works on
    ``log`` of a ``positive`` hyperparameter and on a real one directly.
    """

    family: type
    params: tuple[tuple[str, float], ...]
    dims: str | None = None
    size: int | None = None
    simplex: bool = False  # mixture weights: estimated by penalized ML on the MAP path, not by the criterion
    positive: bool = True

    def rv(self, name: str):
        return self.family(name, **dict(self.params), dims=self.dims)

    def dist(self):
        shape = () if self.size is None else (self.size,)
        return self.family.dist(**dict(self.params), shape=() if self.simplex else shape)


# ------------------------------------------------------------------------ likelihoods


#: Gene parameter -> (name on the natural scale, numpy map, pytensor map).
NATURAL_SCALE = {
    "log_dispersion": ("dispersion", np.exp, pt.exp),
    "logit_zero": ("zero_prob", special.expit, pt.sigmoid),
}


class _Likelihood:
    """Shared mechanics: subclasses say which distribution and with what arguments.

    ``dist`` (elementwise, for the MAP kernels) and ``observe`` (the PyMC
    model, gene parameters broadcast over observations) build the same
    distribution from :meth:`_make`, so the math is written once.
    """

    kind: ClassVar[str] = "likelihood"
    gene_params: ClassVar[tuple[str, ...]] = ()
    prior_slots: ClassVar[dict[str, str]] = {}

    def _make(self, eta, params, **named):  # pragma: no cover - every part overrides it
        raise NotImplementedError

    def dist(self, eta, params):
        return self._make(eta, params)

    def kernel_logp(self, value, eta, params):
        """Elementwise log-density that the MAP kernels differentiate: ``dist``'s own logp by default."""
        return pm.logp(self.dist(eta, params), value)

    def kernel_logp_split(self, value, eta, params):
        """``kernel_logp`` as ``(terms with eta, terms without)``, or None where a part does not split it.

        With the gene parameters held (quadrature nodes of a random-effect
        scale that share one dispersion), the eta-free terms (the log-gamma
        normalizers, the costly part) are the same at every node and are
        computed once.
        """
        return None

    def observe(self, name, eta, columns, observed, dims, **extra):
        """The observed variable; ``columns`` holds each gene parameter broadcastable to (gene, obs).

        ``extra`` goes to the distribution (``total_size`` for minibatches).
        """
        return self._make(eta, dict(columns), name=name, observed=observed, dims=dims, **extra)

    def deterministics(self, params, dims=None):
        for pname in self.gene_params:
            label, _, to_natural = NATURAL_SCALE[pname]
            d = (dims or {}).get(pname, "gene")
            if "zero_coef" in d:
                continue  # a zero logit with covariates has no single natural-scale value
            pm.Deterministic(label, to_natural(params[pname]), dims=d)


def _build(family, named, **kwargs):
    """``family.dist(**kwargs)``, or the named, observed variable when ``named`` is given."""
    if named:
        return family(named.pop("name"), **kwargs, **named)
    return family.dist(**kwargs)


def _nb_args(eta, params):
    return {"mu": pt.exp(eta), "alpha": pt.exp(-params["log_dispersion"])}


def _nb_kernel_terms(value, eta, log_disp):
    """``(log NB(value), log NB(0))`` for ``mu = exp(eta)``, dispersion ``exp(log_disp)``, without bound checks.

    Written with one ``log1p(dispersion * mu)`` so that the Poisson limit
    (tiny dispersions) loses no precision: ``r log(r / (r + mu))`` would
    cancel there.
    """
    with_eta, normalizer = _nb_kernel_split(value, eta, log_disp)
    return normalizer + with_eta, -pt.exp(-log_disp) * pt.log1p(pt.exp(log_disp + eta))


def _nb_kernel_split(value, eta, log_disp):
    """The NB log-density's terms with ``eta`` and its eta-free normalizer, summing to it."""
    size = pt.exp(-log_disp)
    log1p_am = pt.log1p(pt.exp(log_disp + eta))
    # lgamma(value + size) - lgamma(size) - lgamma(value + 1), as short products for small counts.
    normalizer = log_rising(value, size) - log_rising(value, 1.0)
    return -size * log1p_am + value * (log_disp + eta - log1p_am), normalizer


@dataclass(frozen=True)
class NegativeBinomial(_Likelihood):
    """``y ~ NB(mu = exp(eta), dispersion)``, var = mu + dispersion * mu**2.

    The per-gene parameter is ``log_dispersion`` (DESeq2's dispersion is
    ``1 / alpha`` of :class:`pymc.NegativeBinomial`).
    """

    gene_params: ClassVar[tuple[str, ...]] = ("log_dispersion",)
    prior_slots: ClassVar[dict[str, str]] = {"log_dispersion": "dispersion"}

    def _make(self, eta, params, **named):
        return _build(pm.NegativeBinomial, named, **_nb_args(eta, params))

    def kernel_logp(self, value, eta, params):
        return _nb_kernel_terms(value, eta, params["log_dispersion"])[0]

    def kernel_logp_split(self, value, eta, params):
        return _nb_kernel_split(value, eta, params["log_dispersion"])

    def mean_var(self, mu, params):
        """Mean and variance of the counts (numpy), for Pearson residuals."""
        return mu, mu + np.exp(params[0]) * mu**2

    def replicate(self, mu, params, rng):
        """Replicated counts (numpy) for posterior predictive checks."""
        size = np.exp(-params[0])
        return rng.negative_binomial(size, size / (size + mu))


@dataclass(frozen=True)
class ZeroInflatedNegativeBinomial(_Likelihood):
    """``y ~ pi_g * 0 + (1 - pi_g) * NB(mu = exp(eta), dispersion)``.

    Gene parameters: ``log_dispersion`` and ``logit_zero`` (the log-odds of a
    structural zero, ``pi_g = sigmoid(logit_zero)``). ``exp(eta)`` is the mean
    of the NB component, so slopes are log fold changes of the count mean among
    non-structural observations; with a per-gene ``pi_g`` they are also the
    log fold changes of the overall mean ``(1 - pi_g) mu``.
    """

    gene_params: ClassVar[tuple[str, ...]] = ("log_dispersion", "logit_zero")
    prior_slots: ClassVar[dict[str, str]] = {"log_dispersion": "dispersion", "logit_zero": "zero_inflation"}

    def _make(self, eta, params, **named):
        return _build(pm.ZeroInflatedNegativeBinomial, named, psi=pt.sigmoid(-params["logit_zero"]),
                      **_nb_args(eta, params))

    def kernel_logp(self, value, eta, params):
        z = params["logit_zero"]
        nb, log_p0 = _nb_kernel_terms(value, eta, params["log_dispersion"])
        # At 0: log(pi + (1 - pi) p0) = log pi + log1p(exp(log p0 - z)), as (1 - pi) / pi = exp(-z).
        return pt.switch(pt.eq(value, 0), -pt.softplus(-z) + pt.softplus(log_p0 - z), -pt.softplus(z) + nb)

    def mean_var(self, mu, params):
        pi = special.expit(params[1])
        return (1 - pi) * mu, (1 - pi) * mu * (1 + mu * (pi + np.exp(params[0])))

    def replicate(self, mu, params, rng):
        size = np.exp(-params[0])
        y = rng.negative_binomial(size, size / (size + mu))
        return np.where(rng.random(y.shape) < special.expit(params[1]), 0, y)


def _hurdle_nb_logp(value, psi, mu, alpha):
    """Hurdle NB: ``log(1 - psi)`` at 0, else ``log psi + NB(y) - log(1 - NB(0))``.

    ``NB(0) = (alpha / (alpha + mu))^alpha`` is written out so that the
    log-density has closed-form second derivatives (PyMC's own hurdle goes
    through the NB log-CDF, whose incomplete-beta gradient has none).
    """
    nb = pm.logp(pm.NegativeBinomial.dist(mu=mu, alpha=alpha), value)
    log_p0 = -alpha * pt.log1p(mu / alpha)
    # log(1 - p0): log1mexp's second derivative is inf/inf where p0 underflows, and switch
    # gradients carry both branches, so each branch only ever sees inputs it handles.
    trunc = pt.switch(log_p0 < -30.0, -pt.exp(log_p0), pt.log1mexp(pt.maximum(pt.minimum(log_p0, -1e-12), -30.0)))
    return pt.switch(pt.eq(value, 0), pt.log1p(-psi), pt.log(psi) + nb - trunc)


def _hurdle_nb_random(psi, mu, alpha, rng=None, size=None):
    rng = rng if rng is not None else np.random.default_rng()
    shape = size if size is not None else np.broadcast_shapes(np.shape(psi), np.shape(mu), np.shape(alpha))
    psi, mu, alpha = (np.broadcast_to(a, shape) for a in (psi, mu, alpha))
    y = rng.negative_binomial(alpha, alpha / (alpha + mu))
    for _ in range(10_000):  # zero truncation by redrawing zeros
        redo = y == 0
        if not redo.any():
            break
        y[redo] = rng.negative_binomial(alpha[redo], alpha[redo] / (alpha[redo] + mu[redo]))
    return np.where(rng.random(shape) < psi, y, 0)


@dataclass(frozen=True)
class HurdleNegativeBinomial(_Likelihood):
    """``P(y = 0) = pi_g``; ``y > 0`` follows the zero-truncated ``NB(mu = exp(eta), dispersion)``.

    Gene parameters: ``log_dispersion`` and ``logit_zero`` (the log-odds of a
    zero, ``pi_g = sigmoid(logit_zero)``). Unlike zero inflation, every zero
    comes from the hurdle; slopes are log fold changes of the untruncated NB
    mean of the positive part.
    """

    gene_params: ClassVar[tuple[str, ...]] = ("log_dispersion", "logit_zero")
    prior_slots: ClassVar[dict[str, str]] = {"log_dispersion": "dispersion", "logit_zero": "zero_inflation"}

    def _make(self, eta, params, **named):
        nb = _nb_args(eta, params)
        args = (pt.sigmoid(-params["logit_zero"]), nb["mu"], nb["alpha"])
        kw = dict(logp=_hurdle_nb_logp, random=_hurdle_nb_random, dtype="int64")
        if named:
            return pm.CustomDist(named.pop("name"), *args, **kw, **named)
        return pm.CustomDist.dist(*args, **kw, class_name="HurdleNB")

    def mean_var(self, mu, params):
        pi, disp = special.expit(params[1]), np.exp(params[0])
        positive = -np.expm1(-np.log1p(disp * mu) / disp)  # 1 - NB(0)
        m = (1 - pi) * mu / positive
        return m, (1 - pi) * (mu + (1 + disp) * mu**2) / positive - m**2

    def replicate(self, mu, params, rng):
        size = np.exp(-params[0])
        return _hurdle_nb_random(special.expit(-params[1]), mu, size, rng=rng)


@dataclass(frozen=True)
class Poisson(_Likelihood):
    """``y ~ Poisson(exp(eta))``: the baseline with no overdispersion."""

    def _make(self, eta, params, **named):
        return _build(pm.Poisson, named, mu=pt.exp(eta))

    def mean_var(self, mu, params):
        return mu, mu

    def replicate(self, mu, params, rng):
        return rng.poisson(mu)


# ------------------------------------------------------------------------ gene priors


@dataclass(frozen=True)
class NormalPrior:
    """Fixed ``Normal(mu, sigma)`` on every gene's value (intercepts, tidy models)."""

    mu: float = 0.0
    sigma: float = 10.0
    kind: ClassVar[str] = "prior"

    def hyper(self, n: int) -> dict[str, Hyper]:
        return {}

    def loc_scale(self, h, ctx):
        return pt.as_tensor(self.mu), pt.as_tensor(self.sigma)


@dataclass(frozen=True)
class NormalLearnedScale:
    """Adaptive shrinkage: ``beta_gj ~ Normal(0, tau_j)``, ``tau_j ~ HalfNormal(tau_sigma)``.

    ``tau_j`` is shared by all genes and learned from them; on the MAP path
    it maximizes the Laplace-approximate marginal likelihood.
    """

    tau_sigma: float = 1.0
    kind: ClassVar[str] = "prior"

    def hyper(self, n: int) -> dict[str, Hyper]:
        return {"tau": Hyper(pm.HalfNormal, (("sigma", self.tau_sigma),), dims="slope", size=n)}

    def loc_scale(self, h, ctx):
        return pt.zeros_like(h["tau"]), h["tau"]


@dataclass(frozen=True)
class ScaleMixture:
    """Adaptive shrinkage with a null: an ash-style scale mixture of normals.

    Each gene draws one component ``k`` of a fixed grid of scales
    ``sigma_k = geomspace(grid_min, grid_max, n_grid)`` (natural-log units) and
    all its non-intercept coefficients are ``Normal(0, sigma_k)``. The weights
    ``pi ~ Dirichlet(null_weight, 1, ..., 1)`` are learned across genes, so the
    prior puts as much mass near zero as the data support. Unlike a single
    ``Normal(0, tau)``, truly null genes then sit in the null component, whose
    weight counts against either sign in the lfsr (ash's definition), which
    keeps s-value calls calibrated when most genes do not change.
    """

    grid_min: float = 0.02
    grid_max: float = 4.0
    n_grid: float = 16.0
    null_weight: float = 10.0
    kind: ClassVar[str] = "prior"

    def grid(self):
        import numpy as np

        return np.geomspace(self.grid_min, self.grid_max, int(self.n_grid))

    def concentration(self):
        import numpy as np

        a = np.ones(int(self.n_grid))
        a[0] = self.null_weight
        return a

    def hyper(self, n: int) -> dict[str, Hyper]:
        return {"pi": Hyper(pm.Dirichlet, (("a", tuple(self.concentration())),), dims="scale", simplex=True)}

    def loc_scale(self, h, ctx):
        # The mixture is not a single normal: the MAP path and the model handle it
        # component by component; this placeholder keeps layouts uniform.
        return pt.as_tensor(0.0), pt.as_tensor(1.0)

    def logp(self, slopes, pi):
        """``sum_g log sum_k pi_k prod_j N(beta_gj; 0, sigma_k)`` for ``slopes`` (gene, slope)."""
        sig = pt.as_tensor(self.grid())
        z = slopes[:, :, None] / sig[None, None, :]
        comp = pt.sum(-0.5 * z**2 - pt.log(sig)[None, None, :] - 0.5 * math.log(2 * math.pi), axis=1)
        return pt.sum(pt.logsumexp(pt.log(pi)[None, :] + comp, axis=1))


@dataclass(frozen=True)
class DispersionTrend:
    """``log dispersion_g ~ Normal(log(a0 + a1 / base_mean_g), sigma_d)``.

    DESeq2's parametric mean–dispersion trend with ``a0`` (asymptotic
    dispersion), ``a1`` (extra-Poisson term) and the scatter ``sigma_d``
    learned jointly across genes. Priors: ``a0 ~ LogNormal(log_a0_mu,
    log_a0_sigma)``, ``a1 ~ LogNormal(log_a1_mu, log_a1_sigma)``,
    ``sigma_d ~ HalfNormal(sigma_d_sigma)``. With one dispersion per level
    of a factor (``dispersion_by``), level ``l`` has the trend shifted by
    ``disp_shift_l`` (0 for the first level).
    """

    log_a0_mu: float = math.log(0.05)
    log_a0_sigma: float = 2.0
    log_a1_mu: float = math.log(0.5)
    log_a1_sigma: float = 2.0
    sigma_d_sigma: float = 1.0
    level_shift_sigma: float = 1.0
    kind: ClassVar[str] = "prior"

    def hyper(self, n: int) -> dict[str, Hyper]:
        return {
            "a0": Hyper(pm.LogNormal, (("mu", self.log_a0_mu), ("sigma", self.log_a0_sigma))),
            "a1": Hyper(pm.LogNormal, (("mu", self.log_a1_mu), ("sigma", self.log_a1_sigma))),
            "sigma_d": Hyper(pm.HalfNormal, (("sigma", self.sigma_d_sigma),)),
        }

    def level_hyper(self, n_levels: int) -> dict[str, Hyper]:
        """With ``dispersion_by``: ``disp_shift_l ~ Normal(0, level_shift_sigma)``, the log-scale shift of
        the trend for each level after the first (a noisier group moves the whole trend, learned across genes)."""
        return {"disp_shift": Hyper(pm.Normal, (("mu", 0.0), ("sigma", self.level_shift_sigma)), dims="shifted_level",
                                    size=n_levels - 1, positive=False)}

    def loc_scale(self, h, ctx):
        return pt.log(h["a0"] + h["a1"] / ctx["base_mean"]), h["sigma_d"]


@dataclass(frozen=True)
class LogDispersionNormal(NormalPrior):
    """Fixed ``log dispersion ~ Normal(mu, sigma)``: a free dispersion per response (tidy ``nb``)."""

    mu: float = math.log(0.1)
    sigma: float = 3.0


@dataclass(frozen=True)
class ZeroInflationNormal:
    """``logit_zero_g ~ Normal(zi_mu, zi_sigma)``: per-gene zero inflation shrunk across genes.

    ``zi_mu ~ Normal(mu_mu, mu_sigma)`` (the typical log-odds of a structural
    zero) and ``zi_sigma ~ HalfNormal(sigma_sigma)`` are learned from all genes.
    With zero-part covariates (``data.with_zero_design``) this is the prior of
    the zero logit's intercept; covariate coefficients get ``Normal(0, coef_sigma)``.
    """

    mu_mu: float = -3.0
    mu_sigma: float = 2.0
    sigma_sigma: float = 1.0
    coef_sigma: float = 1.5
    kind: ClassVar[str] = "prior"

    def coef_loc_scale(self):
        """Prior of zero-part covariate coefficients (log odds ratios): ``Normal(0, coef_sigma)``."""
        return pt.as_tensor(0.0), pt.as_tensor(self.coef_sigma)

    def hyper(self, n: int) -> dict[str, Hyper]:
        return {
            "zi_mu": Hyper(pm.Normal, (("mu", self.mu_mu), ("sigma", self.mu_sigma)), positive=False),
            "zi_sigma": Hyper(pm.HalfNormal, (("sigma", self.sigma_sigma),)),
        }

    def loc_scale(self, h, ctx):
        return h["zi_mu"], h["zi_sigma"]


@dataclass(frozen=True)
class ZeroLogitFixed(NormalPrior):
    """Fixed ``logit_zero ~ Normal(mu, sigma)``: one response's own zero probability (tidy models)."""

    mu: float = -1.0
    sigma: float = 3.0
    coef_sigma: float = 10.0

    def coef_loc_scale(self):
        return pt.as_tensor(0.0), pt.as_tensor(self.coef_sigma)


@dataclass(frozen=True)
class RandomEffectScales:
    """Group-level effects ``b_gl ~ Normal(0, sd_gt)`` with per-gene scales shrunk across genes.

    For each random-effect term ``t`` (``1|donor``, ``x|donor``, ...) every
    gene has its own scale, ``log sd_gt ~ Normal(re_mu_t, re_sigma_t)``, with
    ``re_mu_t ~ Normal(mu_mu, mu_sigma)`` and ``re_sigma_t ~
    HalfNormal(sigma_sigma)`` learned from all genes. The effects are
    non-centred in the PyMC model; on the MAP path each gene's scales are
    integrated out by quadrature over their Laplace-approximate marginal
    likelihood (never taken from the joint mode, where they collapse to 0).
    """

    mu_mu: float = math.log(0.3)
    mu_sigma: float = 1.5
    sigma_sigma: float = 1.0
    kind: ClassVar[str] = "prior"

    def hyper(self, n: int) -> dict[str, Hyper]:
        return {
            "re_mu": Hyper(pm.Normal, (("mu", self.mu_mu), ("sigma", self.mu_sigma)), dims="re_term", size=n,
                           positive=False),
            "re_sigma": Hyper(pm.HalfNormal, (("sigma", self.sigma_sigma),), dims="re_term", size=n),
        }

    def loc_scale(self, h, ctx):
        return h["re_mu"], h["re_sigma"]


@dataclass(frozen=True)
class RandomEffectScaleFixed(NormalPrior):
    """Fixed ``log sd_t ~ Normal(mu, sigma)`` per term: one response's own group-level scale (tidy models)."""

    mu: float = math.log(0.5)
    sigma: float = 1.5


# --------------------------------------------------------------------------- registry

#: section name -> {part name -> part class}; the only code a spec can reach.
REGISTRY: dict[str, dict[str, type]] = {
    "likelihood": {"negative_binomial": NegativeBinomial, "poisson": Poisson,
                   "zero_inflated_negative_binomial": ZeroInflatedNegativeBinomial,
                   "hurdle_negative_binomial": HurdleNegativeBinomial},
    "intercept": {"normal": NormalPrior},
    "coefficients": {"scale_mixture": ScaleMixture, "normal_learned_scale": NormalLearnedScale, "normal": NormalPrior},
    "dispersion": {"trend": DispersionTrend, "normal": LogDispersionNormal},
    "zero_inflation": {"normal": ZeroInflationNormal, "fixed": ZeroLogitFixed},
    "random_effects": {"normal_scales": RandomEffectScales, "fixed": RandomEffectScaleFixed},
}


def part_fields(cls) -> dict[str, object]:
    """Default hyperparameters of a part, by name."""
    return {f.name: f.default for f in dataclasses.fields(cls)}
