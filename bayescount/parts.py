"""The closed registry of model parts that template specs are resolved through.

A spec names parts and sets their hyperparameters; it never contains code.
Each part is a frozen dataclass whose fields are its default
hyperparameters, so defaults are declared once, beside the code that uses
them. Overrides are merged over a copy and unknown keys are errors.

Two kinds of parts exist:

* **likelihoods** turn a linear predictor ``eta`` (gene x obs) and per-gene
  parameters into a PyMC distribution. The same ``dist`` method feeds the
  PyMC model and the MAP path's compiled derivatives, so the math is
  written once.
* **gene priors** put ``Normal(loc, scale)`` on a per-gene quantity
  (intercepts, slopes, log-dispersions), where ``loc`` and ``scale`` may
  depend on shared hyperparameters learned across genes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import pymc as pm
import pytensor.tensor as pt

# --------------------------------------------------------------------- hyperparameters


@dataclass(frozen=True)
class Hyper:
    """A positive shared hyperparameter: its prior family and parameters.

    ``rv(name)`` creates it inside a PyMC model; ``dist()`` gives the same
    prior unnamed, for the MAP path's marginal criterion.
    """

    family: type
    params: tuple[tuple[str, float], ...]
    dims: str | None = None
    size: int | None = None

    def rv(self, name: str):
        return self.family(name, **dict(self.params), dims=self.dims)

    def dist(self):
        shape = () if self.size is None else (self.size,)
        return self.family.dist(**dict(self.params), shape=shape)


# ------------------------------------------------------------------------ likelihoods


@dataclass(frozen=True)
class NegativeBinomial:
    """``y ~ NB(mu = exp(eta), dispersion)``, var = mu + dispersion * mu**2.

    The per-gene parameter is ``log_dispersion`` (DESeq2's dispersion is
    ``1 / alpha`` of :class:`pymc.NegativeBinomial`).
    """

    kind: ClassVar[str] = "likelihood"
    gene_params: ClassVar[tuple[str, ...]] = ("log_dispersion",)
    prior_slots: ClassVar[dict[str, str]] = {"log_dispersion": "dispersion"}

    def dist(self, eta, params):
        return pm.NegativeBinomial.dist(mu=pt.exp(eta), alpha=pt.exp(-params["log_dispersion"]))

    def observe(self, name, eta, params, observed, dims):
        return pm.NegativeBinomial(
            name,
            mu=pt.exp(eta),
            alpha=pt.exp(-params["log_dispersion"])[:, None],
            observed=observed,
            dims=dims,
        )

    def deterministics(self, params):
        pm.Deterministic("dispersion", pt.exp(params["log_dispersion"]), dims="gene")


@dataclass(frozen=True)
class Poisson:
    """``y ~ Poisson(exp(eta))``: the baseline with no overdispersion."""

    kind: ClassVar[str] = "likelihood"
    gene_params: ClassVar[tuple[str, ...]] = ()
    prior_slots: ClassVar[dict[str, str]] = {}

    def dist(self, eta, params):
        return pm.Poisson.dist(mu=pt.exp(eta))

    def observe(self, name, eta, params, observed, dims):
        return pm.Poisson(name, mu=pt.exp(eta), observed=observed, dims=dims)

    def deterministics(self, params):
        pass


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
class DispersionTrend:
    """``log dispersion_g ~ Normal(log(a0 + a1 / base_mean_g), sigma_d)``.

    DESeq2's parametric mean–dispersion trend with ``a0`` (asymptotic
    dispersion), ``a1`` (extra-Poisson term) and the scatter ``sigma_d``
    learned jointly across genes. Priors: ``a0 ~ LogNormal(log_a0_mu,
    log_a0_sigma)``, ``a1 ~ LogNormal(log_a1_mu, log_a1_sigma)``,
    ``sigma_d ~ HalfNormal(sigma_d_sigma)``.
    """

    log_a0_mu: float = math.log(0.05)
    log_a0_sigma: float = 2.0
    log_a1_mu: float = math.log(0.5)
    log_a1_sigma: float = 2.0
    sigma_d_sigma: float = 1.0
    kind: ClassVar[str] = "prior"

    def hyper(self, n: int) -> dict[str, Hyper]:
        return {
            "a0": Hyper(pm.LogNormal, (("mu", self.log_a0_mu), ("sigma", self.log_a0_sigma))),
            "a1": Hyper(pm.LogNormal, (("mu", self.log_a1_mu), ("sigma", self.log_a1_sigma))),
            "sigma_d": Hyper(pm.HalfNormal, (("sigma", self.sigma_d_sigma),)),
        }

    def loc_scale(self, h, ctx):
        return pt.log(h["a0"] + h["a1"] / ctx["base_mean"]), h["sigma_d"]


@dataclass(frozen=True)
class LogDispersionNormal:
    """Fixed ``log dispersion ~ Normal(mu, sigma)``: a free dispersion per response (tidy ``nb``)."""

    mu: float = math.log(0.1)
    sigma: float = 3.0
    kind: ClassVar[str] = "prior"

    def hyper(self, n: int) -> dict[str, Hyper]:
        return {}

    def loc_scale(self, h, ctx):
        return pt.as_tensor(self.mu), pt.as_tensor(self.sigma)


# --------------------------------------------------------------------------- registry

#: section name -> {part name -> part class}; the only code a spec can reach.
REGISTRY: dict[str, dict[str, type]] = {
    "likelihood": {"negative_binomial": NegativeBinomial, "poisson": Poisson},
    "intercept": {"normal": NormalPrior},
    "coefficients": {"normal_learned_scale": NormalLearnedScale, "normal": NormalPrior},
    "dispersion": {"trend": DispersionTrend, "normal": LogDispersionNormal},
}


def part_fields(cls) -> dict[str, object]:
    """Default hyperparameters of a part, by name."""
    return {f.name: f.default for f in dataclasses.fields(cls)}
