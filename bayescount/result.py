"""The one result type every fit path returns, its LFC table, and save/load."""

from __future__ import annotations

import functools
import json
import logging
import threading

import numpy as np
import pandas as pd
import xarray as xr

from .design import Design, build_design
from .errors import InputError, ResultIntegrityError
from .io import atomic_path
from .spec import Spec, spec_from_json, spec_hash
from .stats import bh_adjust, hdi_from_draws, lfsr_from_draws, mixture_summary, quad_form, svalue

log = logging.getLogger(__name__)

LFC_COLUMNS = ["gene", "base_mean", "log2fc", "log2fc_sd", "hdi_low", "hdi_high", "lfsr", "svalue", "dispersion", "flag"]


class Fit:
    """A fitted template: ArviZ data (an :class:`xarray.DataTree`) plus its spec.

    Groups: ``posterior`` (draws of ``beta``, gene parameters such as
    ``dispersion``, and the shared hyperparameters), ``observed_data``,
    ``constant_data`` (design, offsets, base means, flags, sample table),
    ``sample_stats``, ``log_likelihood`` (on request) and, on the MAP path,
    ``laplace`` (per-gene mode and covariance) and ``map_stats``. Root attrs
    hold the spec JSON, its hash, the method, the seed and package versions.

    On the MAP path the ``posterior`` draws are a function of the ``laplace``
    group and the seed; they are made on first access to :attr:`idata` (the
    LFC table does not need them), and are the same whenever they are made.
    :attr:`attrs` and :meth:`group` read the rest without making them.

    Examples
    --------
    >>> from bayescount import simulate, fit
    >>> sim = simulate(n_genes=200, n_per_group=3, random_seed=1)
    >>> res = fit(sim.data, model="nb_trend", method="map", random_seed=1)
    >>> table = res.lfc(["group", "B", "A"])
    >>> list(table.columns[:4])
    ['gene', 'base_mean', 'log2fc', 'log2fc_sd']
    """

    def __init__(self, idata: xr.DataTree, spec: Spec, posterior=None):
        self._idata = idata
        self.spec = spec
        # Adds the posterior group to the tree when first needed (the MAP path's draws).
        self._pending = posterior
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        groups = (["posterior"] if self._pending is not None else []) + list(self._idata.children)
        return f"Fit(model={self.spec.name!r}, method={self.method!r}, genes={len(self.genes)}, groups={groups})"

    def __reduce__(self):
        return (type(self), (self.idata, self.spec))

    # ------------------------------------------------------------------ properties
    @property
    def idata(self) -> xr.DataTree:
        """The ArviZ data (an :class:`xarray.DataTree`), its ``posterior`` group included."""
        if self._pending is not None:
            with self._lock:
                if self._pending is not None:
                    tree = self._idata
                    self._pending(tree)
                    kids = dict(tree.children)
                    tree.children = {"posterior": kids.pop("posterior"), **kids}  # first, as on the other paths
                    self._pending = None
        return self._idata

    @property
    def attrs(self) -> dict:
        """The root attrs (spec, hash, method, seed, versions, timings), read without making the draws."""
        return self._idata.attrs

    @property
    def method(self) -> str:
        return self._idata.attrs["method"]

    @property
    def random_seed(self) -> int:
        return int(self._idata.attrs["random_seed"])

    @functools.cached_property
    def genes(self) -> pd.Index:
        return pd.Index(self._idata["constant_data"]["gene"].values.astype(str), name="gene")

    @property
    def samples(self) -> pd.DataFrame:
        cd = self._idata["constant_data"]
        cols = json.loads(self._idata.attrs["sample_columns"])
        frame = pd.DataFrame({c: cd[f"sample__{c}"].values for c in cols}, index=cd["obs"].values.astype(str))
        frame.index.name = "obs"
        return frame

    @functools.cached_property
    def design(self) -> Design:
        """The design, rebuilt from the stored formula and sample table and checked against the stored matrix."""
        d = build_design(self._idata.attrs["design"], self.samples)
        stored = self._idata["constant_data"]["design"].values
        if d.matrix.shape != stored.shape or not np.allclose(d.matrix, stored):
            raise ResultIntegrityError("stored design matrix does not match the stored sample table and formula")
        return d

    @property
    def hyper(self) -> dict:
        """Shared hyperparameters: point values (MAP) or posterior means."""
        attrs = self._idata.attrs
        names = json.loads(attrs["hyper_names"])
        if self.has_group("laplace") and "hyper" in attrs:
            stored = json.loads(attrs["hyper"])  # the MAP point values, as the posterior repeats them
            return {n: stored[n] for n in names if n in stored}
        post = self.idata["posterior"]
        return {n: post[n].mean(("chain", "draw")).values.tolist() for n in names if n in post}

    def group(self, name: str) -> xr.DataTree:
        """One group of :attr:`idata`; only ``posterior`` makes the MAP path's draws."""
        return self.idata[name] if name == "posterior" else self._idata[name]

    def has_group(self, name: str) -> bool:
        return name in self._idata.children or (name == "posterior" and self._pending is not None)

    def _coord(self, name: str) -> list[str] | None:
        """A posterior coordinate's values (None if absent); the MAP path's ``laplace`` group holds them too."""
        if "laplace" in self._idata.children and name in self._idata["laplace"].coords:
            return [str(v) for v in self._idata["laplace"][name].values]
        post = self.idata["posterior"]
        return [str(v) for v in post[name].values] if name in post.coords else None

    # ------------------------------------------------------------------ answers
    def lfc(self, contrast=None, hdi_prob: float = 0.95) -> pd.DataFrame:
        """Per-gene posterior log2 fold change of a contrast.

        Parameters
        ----------
        contrast : str, [factor, level, reference], or numeric vector, optional
            A coefficient name, a factor contrast, or any linear combination of
            coefficients. Default: with one two-level factor, the second level
            (alphabetical) against the first.
        hdi_prob : float
            Probability mass of the highest-density interval.

        Returns
        -------
        pandas.DataFrame
            ``gene, base_mean, log2fc, log2fc_sd, hdi_low, hdi_high, lfsr,
            svalue, dispersion, flag``; on the MAP path also ``pvalue`` and
            ``padj`` (Wald from the Laplace approximation, BH-adjusted; its
            reference distribution: :meth:`wald_df`).
        """
        if not 0 < hdi_prob < 1:
            raise InputError(f"hdi_prob must be between 0 and 1, got {hdi_prob}")
        vec, label = self.design.contrast_vector(contrast, self.samples)
        P = vec.size
        cd = self._idata["constant_data"]
        # Columns gathered first, the frame made once (a pandas column insert costs ~0.5 ms).
        out = {"gene": self.genes, "base_mean": cd["base_mean"].values}
        if self.has_group("laplace"):
            lap = self._idata["laplace"]
            mode = lap["mix_mode"].values[..., :P]  # gene, component, coef
            cov = lap["mix_cov"].values[..., :P, :P]
            comp_mean = mode @ vec / np.log(2)
            comp_sd = np.sqrt(quad_form(vec, cov)) / np.log(2)
            null = (lap["prior_component"].values == 0) if self._null_applies(vec) else None  # (gene, component)
            mean, sd, lfsr, lo, hi = mixture_summary(lap["mix_weight"].values, comp_mean, comp_sd, hdi_prob,
                                                     null_component=null, groups=lap["prior_component"].values)
        else:
            beta = self.idata["posterior"]["beta"].values  # chain, draw, gene, coef
            draws = np.einsum("cdgk,k->cdg", beta, vec).reshape(-1, beta.shape[2]) / np.log(2)
            mean, sd = draws.mean(axis=0), draws.std(axis=0, ddof=1)
            lo, hi = hdi_from_draws(draws, hdi_prob)
            null_prob = self._null_prob_draws(beta) if self._null_applies(vec) else None
            lfsr = lfsr_from_draws(draws, null_prob=null_prob)
        out["log2fc"], out["log2fc_sd"], out["hdi_low"], out["hdi_high"] = mean, sd, lo, hi
        out["lfsr"] = lfsr
        out["svalue"] = svalue(lfsr)
        genes = self.gene_summary()
        out["dispersion"] = genes["dispersion"].to_numpy() if "dispersion" in genes else np.full(len(genes), np.nan)
        for col in genes.columns:
            if col.startswith("dispersion["):  # one per level with dispersion_by
                out[col] = genes[col].to_numpy()
        out["flag"] = self._flags()
        if self.has_group("laplace"):
            from scipy import special

            # Wald test on the near-MLE fit (coefficient prior widened), as DESeq2 tests the MLE,
            # but against a t reference where the dispersion is estimated (edgeR's QL logic).
            lap = self._idata["laplace"]
            est = lap["mle_mode"].values[:, :P] @ vec
            se = np.sqrt(quad_form(vec, lap["mle_cov"].values[:, :P, :P]))
            df = np.asarray(self.wald_df(), dtype=float)  # scalar, or per gene with weights
            if np.isfinite(df).all():
                # Only the dispersion's share of the variance (1/mu + alpha) is estimated; the
                # Poisson share is known. Satterthwaite: the df grow as that share shrinks.
                am = out["dispersion"] * out["base_mean"]
                share = np.clip(am / (1.0 + am), 1e-6, 1.0)
                df = df / share**2
            out["pvalue"] = 2.0 * special.stdtr(df, -np.abs(est) / se)  # t.sf without the distribution wrapper
            out["padj"] = bh_adjust(out["pvalue"])
        out = pd.DataFrame(out)
        out.attrs["contrast"] = label
        out.attrs["hdi_prob"] = hdi_prob
        return out

    def wald_df(self):
        """Degrees of freedom of the dispersion estimate behind the Wald test; ``inf`` means none.

        A float, or one value per gene when observation weights are set (the
        residual df count the weights, so a weight of 2 is the sample twice).

        For a negative binomial with one dispersion per gene shrunk to a trend
        (``nb_trend``): residual df ``n_obs - rank(X)`` plus the prior df that the
        learned scatter ``sigma_d`` is worth (:func:`bayescount.stats.prior_df`,
        limma's moment match), as edgeR's quasi-likelihood F-test counts them.
        Gene ``g``'s p-value uses a t reference with ``wald_df() / s_g**2`` df,
        where ``s_g = a / (1 + a)``, ``a = dispersion_g * base_mean_g``, is the
        dispersion's share of the count variance (Satterthwaite: the Poisson share
        is known). The normal reference (DESeq2's) put null p-values below 1e-4
        ~9x too often at 6 vs 6. Other templates (Poisson, zero-inflated, random
        effects, ``dispersion_by``) keep the normal.
        """
        from .parts import DispersionTrend, NegativeBinomial
        from .stats import prior_df

        plain = (type(self.spec.likelihood) is NegativeBinomial and isinstance(self.spec.dispersion, DispersionTrend)
                 and not self._idata.attrs.get("dispersion_by") and getattr(self.spec, "random_effects", None) is None)
        sigma = self.hyper.get("sigma_d")
        if not plain or sigma is None or np.size(sigma) != 1:
            return np.inf
        cd = self._idata["constant_data"]
        X = cd["design"].values
        # With observation weights a weight of 2 is the sample twice: the df count weights.
        n_obs = cd["weights"].values.sum(axis=1) if "weights" in cd else X.shape[0]
        return n_obs - np.linalg.matrix_rank(X) + prior_df(float(np.ravel(sigma)[0]))

    def _null_applies(self, vec) -> bool:
        """The LFC prior has a null component and the contrast involves slopes only."""
        from .parts import ScaleMixture

        coef = list(self._idata["constant_data"]["coef"].values)
        shrunk = set(self._slopes())
        slopes_only = all(c in shrunk for c, v in zip(coef, vec) if v != 0)
        return isinstance(self.spec.coefficients, ScaleMixture) and slopes_only

    def _slopes(self) -> list[str]:
        """Coefficients under the LFC prior (the design's last term)."""
        slopes = self._coord("slope")
        if slopes is not None:
            return slopes
        return [c for c in map(str, self._idata["constant_data"]["coef"].values) if c != "Intercept"]

    def _null_prob_draws(self, beta) -> np.ndarray:
        """Per-draw probability that a gene sits in the null component: ``(n_draws, n_genes)``."""
        from scipy.special import logsumexp

        coef = list(self._idata["constant_data"]["coef"].values)
        shrunk = set(self._slopes())
        slopes = beta[..., [i for i, c in enumerate(coef) if c in shrunk]]  # chain, draw, gene, slope
        grid = self.spec.coefficients.grid()
        pi = self.idata["posterior"]["pi"].values  # chain, draw, scale
        comp = np.sum(-0.5 * (slopes[..., None] / grid) ** 2 - np.log(grid), axis=3)  # chain, draw, gene, k
        logp = np.log(np.maximum(pi, 1e-300))[:, :, None, :] + comp
        p0 = np.exp(logp[..., 0] - logsumexp(logp, axis=3))
        return p0.reshape(-1, p0.shape[2])

    def _flags(self) -> np.ndarray:
        flags = self._idata["constant_data"]["flags"].values.astype(str).astype(object)
        if self.has_group("map_stats"):
            bad = np.flatnonzero(~self._idata["map_stats"]["converged"].values.astype(bool))
            flags[bad] = [f"{f};map_not_converged" if f else "map_not_converged" for f in flags[bad]]
        return flags

    def gene_summary(self) -> pd.DataFrame:
        """Posterior means of the per-gene likelihood parameters on their natural scale.

        Columns: ``gene``, ``dispersion`` (NB templates) and ``zero_prob`` (the
        structural-zero probability of zero-inflated templates), plus ``flag``.

        Examples
        --------
        >>> from bayescount import simulate, fit
        >>> sim = simulate(n_genes=100, n_per_group=3, random_seed=4)
        >>> fit(sim.data, method="map", random_seed=4).gene_summary().columns.tolist()
        ['gene', 'dispersion', 'flag']
        """
        from .parts import NATURAL_SCALE

        out = pd.DataFrame({"gene": self.genes})
        post = None if self.has_group("laplace") else self.idata["posterior"]
        for pname in self.spec.likelihood.gene_params:
            col, fn, _ = NATURAL_SCALE[pname]
            Z = self._zero_matrix() if pname == "logit_zero" else None
            if self.has_group("laplace"):
                lap = self._idata["laplace"]
                names = [str(n) for n in lap["param"].values]
                ks = [k for k, n in enumerate(names) if n == pname or n.startswith(pname + "[")]
                x = lap["mix_mode"].values[..., ks]  # (gene, component, coordinate)
                # With zero-part covariates: the zero probability averaged over the samples.
                nat = fn(x) if Z is None else fn(x @ Z.T).mean(axis=-1, keepdims=True)
                values = np.sum(lap["mix_weight"].values[..., None] * nat, axis=1)
            elif Z is None:
                values = fn(post[pname]).mean(("chain", "draw")).values.reshape(len(out), -1)
            else:
                x = post[pname].transpose("chain", "draw", "gene", "zero_coef").values
                values = fn(np.einsum("cdgk,nk->cdgn", x, Z)).mean(axis=(0, 1, 3))[:, None]
            if values.shape[1] == 1:
                out[col] = values[:, 0]
                continue
            # One value per level of dispersion_by: each level's column, and their
            # average over the samples as the gene's overall value.
            levels = self._coord("disp_level")
            for j, lv in enumerate(levels):
                out[f"{col}[{lv}]"] = values[:, j]
            out[col] = values @ self.level_shares()
        out["flag"] = self._flags()
        return out

    def _zero_matrix(self) -> np.ndarray | None:
        cd = self._idata["constant_data"]
        return cd["zero_design"].values if "zero_design" in cd else None

    def zero_effect(self, contrast=None, hdi_prob: float = 0.95) -> pd.DataFrame:
        """Per-gene change in the zero probability (ZINB's structural zeros, the hurdle's zeros).

        Needs a fit with zero-part covariates (``fit(..., zero_design="~ group")``).
        The contrast is resolved against the zero design like :meth:`lfc`'s
        against the count design; the answer is on the log-odds scale.

        Parameters
        ----------
        contrast : str, [factor, level, reference], or numeric vector, optional
            Default: with one two-level factor, its second level against the first.
        hdi_prob : float

        Returns
        -------
        pandas.DataFrame
            ``gene, zero_prob, log_odds_ratio, log_odds_ratio_sd, hdi_low,
            hdi_high, lfsr, flag``; ``zero_prob`` is the zero probability
            averaged over the samples. The coefficients' prior is one normal
            with no null component, so the lfsr is close to a one-sided
            posterior tail probability and there is no s-value: on genes
            whose zero probability does not change, calls by lfsr are not
            FDR-controlled; an HDI that excludes 0 is the safer call.

        Examples
        --------
        >>> from bayescount import simulate, fit
        >>> sim = simulate(n_genes=60, n_per_group=6, zero_inflation=(-1.5, 0.5), random_seed=3)
        >>> res = fit(sim.data, model="zinb_trend", zero_design="~ group", random_seed=3)
        >>> res.zero_effect().columns[:3].tolist()
        ['gene', 'zero_prob', 'log_odds_ratio']
        """
        formula = self._idata.attrs.get("zero_design", "")
        if not formula:
            raise InputError("this fit has no zero-part covariates; refit a zero-inflated or hurdle template with "
                             "zero_design='~ group' (CLI --zero-design)")
        if not 0 < hdi_prob < 1:
            raise InputError(f"hdi_prob must be between 0 and 1, got {hdi_prob}")
        design = build_design(formula, self.samples)
        vec, label = design.contrast_vector(contrast, self.samples)
        out = pd.DataFrame({"gene": self.genes, "zero_prob": self.gene_summary()["zero_prob"].to_numpy()})
        if self.has_group("laplace"):
            lap = self._idata["laplace"]
            names = [str(n) for n in lap["param"].values]
            ks = [names.index(f"logit_zero[{c}]") for c in design.coef]
            mode = lap["mix_mode"].values[..., ks]
            cov = lap["mix_cov"].values[..., ks, :][..., ks]
            comp_mean = mode @ vec
            comp_sd = np.sqrt(np.maximum(quad_form(vec, cov), 1e-24))
            mean, sd, lfsr, lo, hi = mixture_summary(lap["mix_weight"].values, comp_mean, comp_sd, hdi_prob)
        else:
            x = self.idata["posterior"]["logit_zero"].transpose("chain", "draw", "gene", "zero_coef").values
            draws = np.einsum("cdgk,k->cdg", x, vec).reshape(-1, x.shape[2])
            mean, sd = draws.mean(axis=0), draws.std(axis=0, ddof=1)
            lo, hi = hdi_from_draws(draws, hdi_prob)
            lfsr = lfsr_from_draws(draws)
        out["log_odds_ratio"], out["log_odds_ratio_sd"], out["hdi_low"], out["hdi_high"] = mean, sd, lo, hi
        out["lfsr"] = lfsr
        out["flag"] = self._flags()
        out.attrs["contrast"] = label
        return out

    def level_shares(self) -> np.ndarray:
        """Share of the samples in each ``dispersion_by`` level (coordinate ``disp_level`` order)."""
        column = self._idata.attrs.get("dispersion_by", "")
        if not column:
            raise InputError("this fit has one dispersion per gene (no dispersion_by)")
        levels = self._coord("disp_level")
        values = self.samples[column].astype(str)
        return np.array([(values == lv).mean() for lv in levels])

    def random_effects(self, hdi_prob: float = 0.95) -> pd.DataFrame:
        """Per-gene random-effect standard deviations and variance shares (ICC), one row per gene and term.

        ``icc`` is the share of the latent (log-scale) variance due to the
        term: ``sd_t^2 / (sum_u sd_u^2 + log(1 + 1/mu + dispersion))``, where
        ``log(1 + 1/mu + dispersion)`` is the observation-level variance of an
        NB count with mean ``mu`` (the gene's base mean) on the log scale
        (Nakagawa, Johnson & Schielzeth 2017); for a slope term ``x|g`` it is
        the share at ``x = 1``. Posterior means and HDIs are over draws.

        Columns: ``gene, term, base_mean, re_sd, re_sd_sd, re_sd_hdi_low,
        re_sd_hdi_high, icc, icc_hdi_low, icc_hdi_high``.

        Examples
        --------
        >>> from bayescount import simulate_cells, fit, CountData
        >>> sim = simulate_cells(n_genes=20, n_donors_per_group=3, cells_per_donor=20, random_seed=1)
        >>> data = CountData.from_pandas(sim.counts, sim.samples, design="~ condition + (1|donor)",
        ...                              size_factors="poscounts")
        >>> fit(data, model="nb_donor", random_seed=1).random_effects().columns[:4].tolist()
        ['gene', 'term', 'base_mean', 're_sd']
        """
        from .stats import hdi_from_draws

        post = self.idata["posterior"]
        if "re_sd" not in post:
            raise InputError(f"template {self.spec.name!r} has no random effects")
        sd = post["re_sd"].transpose("chain", "draw", "gene", "re_term").values
        sd = sd.reshape(-1, *sd.shape[2:])  # (draws, gene, term)
        mu = self._idata["constant_data"]["base_mean"].values
        if "dispersion" in post:
            disp = post["dispersion"]
            if "disp_level" in disp.dims:
                disp = disp.dot(xr.DataArray(self.level_shares(), dims="disp_level"))
            disp = disp.transpose("chain", "draw", "gene").values.reshape(sd.shape[0], -1)
        else:
            disp = np.zeros(sd.shape[:2])
        resid = np.log1p(1.0 / np.maximum(mu, 1e-8)[None, :] + disp)
        var = sd**2
        icc = var / (var.sum(axis=2, keepdims=True) + resid[:, :, None])
        sd_lo, sd_hi = hdi_from_draws(sd, hdi_prob)
        icc_lo, icc_hi = hdi_from_draws(icc, hdi_prob)
        terms = [str(t) for t in post["re_term"].values]
        G, T = sd.shape[1:]
        return pd.DataFrame({
            "gene": np.repeat(np.asarray(self.genes), T), "term": np.tile(terms, G),
            "base_mean": np.repeat(mu, T), "re_sd": sd.mean(axis=0).ravel(), "re_sd_sd": sd.std(axis=0, ddof=1).ravel(),
            "re_sd_hdi_low": sd_lo.ravel(), "re_sd_hdi_high": sd_hi.ravel(),
            "icc": icc.mean(axis=0).ravel(), "icc_hdi_low": icc_lo.ravel(), "icc_hdi_high": icc_hi.ravel(),
        })

    def summary_hyper(self) -> pd.DataFrame:
        """The shared hyperparameters as a table."""
        rows = []
        for name, value in self.hyper.items():
            for i, v in enumerate(np.atleast_1d(value)):
                rows.append({"name": name if np.ndim(value) == 0 else f"{name}[{i}]", "value": v})
        return pd.DataFrame(rows)

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Write the fit to netCDF (atomically: no partial file on failure)."""
        tree = self.idata.copy()
        for node in tree.subtree:
            ds = node.to_dataset()
            drop = [k for k, v in ds.data_vars.items() if v.dtype == object and k not in ("flags",) and not k.startswith("sample__")]
            if drop:
                node.dataset = ds.drop_vars(drop)
        tree.attrs["complete"] = 1
        with atomic_path(path) as tmp:
            tree.to_netcdf(tmp, engine="h5netcdf")

    @classmethod
    def load(cls, path) -> "Fit":
        """Read a saved fit and check its spec hash and completeness."""
        try:
            tree = xr.open_datatree(path, engine="h5netcdf").load()
        except FileNotFoundError:
            raise InputError(f"fit file {str(path)!r} does not exist") from None
        except Exception as exc:
            raise ResultIntegrityError(f"cannot read fit file {str(path)!r}: {exc}") from None
        attrs = tree.attrs
        for key in ("spec", "spec_hash", "method", "random_seed", "versions", "complete"):
            if key not in attrs:
                raise ResultIntegrityError(f"fit file {str(path)!r} lacks attribute {key!r}; it is incomplete or not a bayescount fit")
        if spec_hash(attrs["spec"]) != attrs["spec_hash"]:
            raise ResultIntegrityError(f"fit file {str(path)!r}: spec does not match its recorded hash; the file was altered")
        spec = spec_from_json(attrs["spec"])
        if spec.hash != attrs["spec_hash"]:
            raise ResultIntegrityError(f"fit file {str(path)!r}: spec no longer validates to the same hash")
        saved = json.loads(attrs["versions"])
        now = package_versions()
        diff = {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v}
        if diff:
            log.warning("fit was saved with other package versions: %s", diff)
        return cls(idata=tree, spec=spec)


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages a result depends on (read once per process)."""
    return dict(_package_versions())


@functools.lru_cache(maxsize=1)
def _package_versions() -> tuple:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("bayescount", "pymc", "pytensor", "arviz", "numpy", "pandas", "xarray", "scipy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return tuple(out.items())
