"""Simulate RNA-seq-like counts with known truth.

Negative binomial counts with a DESeq2-like mean–dispersion trend
``dispersion = (a0 + a1 / mean) * exp(N(0, sigma_d))``, random size factors
and a fraction of differentially expressed genes with known log2 fold changes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .data import CountData

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Simulation:
    """Simulated data and the truth that generated it.

    Attributes
    ----------
    counts : pandas.DataFrame
        genes x samples counts.
    samples : pandas.DataFrame
        Sample table with a ``group`` column (levels ``A``, ``B``, ...).
    truth : pandas.DataFrame
        Per gene: ``true_base_mean``, ``true_log2fc`` (B vs A),
        ``true_dispersion``, ``is_de``.
    params : dict
        The generating values (``a0``, ``a1``, ``sigma_d``, ...).
    """

    counts: pd.DataFrame
    samples: pd.DataFrame
    truth: pd.DataFrame
    params: dict
    design: str = "~ group"

    @property
    def data(self) -> CountData:
        """The counts as :class:`CountData` with the ``~ group`` design."""
        return CountData.from_pandas(self.counts, self.samples, design=self.design)

    def write(self, out_dir) -> dict[str, Path]:
        """Write ``counts.csv``, ``samples.csv`` and ``truth.csv`` into a folder."""
        from .io import atomic_write_csv

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {k: out / f"{k}.csv" for k in ("counts", "samples", "truth")}
        atomic_write_csv(self.counts, paths["counts"], index_label="gene")
        atomic_write_csv(self.samples, paths["samples"], index_label="sample")
        atomic_write_csv(self.truth, paths["truth"], index_label="gene")
        return paths


def simulate(
    n_genes: int = 2000,
    n_per_group: int = 6,
    n_groups: int = 2,
    frac_de: float = 0.1,
    lfc_sd: float = 1.5,
    a0: float = 0.05,
    a1: float = 1.0,
    sigma_d: float = 0.5,
    mean_log: float = np.log(100.0),
    mean_log_sd: float = 1.5,
    base_mean: float | None = None,
    dispersion: float | None = None,
    size_factor_sd: float = 0.2,
    zero_inflation: tuple[float, float] | None = None,
    hurdle: tuple[float, float] | None = None,
    dispersion_ratio: float = 1.0,
    frac_dispersion_change: float = 1.0,
    zero_effect: tuple[float, float] | None = None,
    random_seed: int | None = None,
) -> Simulation:
    """Simulate NB counts for ``n_groups`` groups of ``n_per_group`` samples.

    Parameters
    ----------
    n_genes, n_per_group, n_groups : int
    frac_de : float
        Fraction of genes with a nonzero log2 fold change (group B vs A).
    lfc_sd : float
        DE genes draw their log2 fold change from ``Normal(0, lfc_sd)``.
    a0, a1, sigma_d : float
        Dispersion trend ``a0 + a1 / mean`` and log-scale scatter around it.
    mean_log, mean_log_sd : float
        Gene mean counts are log-normal with these parameters.
    base_mean, dispersion : float, optional
        Fix every gene's mean count / dispersion instead (the Poisson-vs-NB demo).
        ``dispersion=0`` gives Poisson counts.
    size_factor_sd : float
        Log-scale sd of the sample size factors.
    zero_inflation : (mean, sd), optional
        Zero-inflated counts: gene ``g``'s structural-zero probability is
        ``sigmoid(N(mean, sd))`` and each count is replaced by 0 with it
        (``truth.true_zero_prob``).
    hurdle : (mean, sd), optional
        Hurdle counts: each count is 0 with gene probability ``sigmoid(N(mean, sd))``
        and otherwise drawn from the zero-truncated NB.
    dispersion_ratio, frac_dispersion_change : float
        Group-specific dispersion: in a fraction ``frac_dispersion_change`` of
        the genes, groups after the first have ``dispersion_ratio`` times the
        first group's dispersion (``truth.true_dispersion_ratio``); the
        setting ``dispersion_by`` is for.
    zero_effect : (fraction, sd), optional
        With ``zero_inflation`` or ``hurdle``: in this fraction of genes the
        zero log-odds of groups after the first change by ``N(0, sd)``
        (``truth.true_zero_log_odds_ratio``), the truth for zero-part covariates.
    random_seed : int
        Seed for :func:`numpy.random.default_rng`; pass it for reproducibility.

    Examples
    --------
    >>> sim = simulate(n_genes=50, n_per_group=3, random_seed=0)
    >>> sim.counts.shape, sorted(sim.samples.group.unique())
    ((50, 6), ['A', 'B'])
    """
    rng = np.random.default_rng(random_seed)
    n_obs = n_per_group * n_groups
    genes = pd.Index([f"gene{i:05d}" for i in range(n_genes)], name="gene")
    obs = pd.Index([f"s{i:03d}" for i in range(n_obs)], name="sample")
    levels = [chr(ord("A") + k) for k in range(n_groups)]
    group = np.repeat(levels, n_per_group)

    if base_mean is None:
        mu0 = np.exp(rng.normal(mean_log, mean_log_sd, n_genes))
    else:
        mu0 = np.full(n_genes, float(base_mean))
    if dispersion is None:
        disp = (a0 + a1 / mu0) * np.exp(rng.normal(0.0, sigma_d, n_genes))
    else:
        disp = np.full(n_genes, float(dispersion))
    is_de = rng.random(n_genes) < frac_de
    lfc = np.zeros((n_genes, n_groups))
    lfc[is_de, 1:] = rng.normal(0.0, lfc_sd, (int(is_de.sum()), n_groups - 1))
    sf = np.exp(rng.normal(0.0, size_factor_sd, n_obs))
    sf /= np.exp(np.mean(np.log(sf)))

    # Group means are centred on mu0 so that the gene's average stays near it.
    level_idx = np.repeat(np.arange(n_groups), n_per_group)
    log2_mu = np.log2(mu0)[:, None] + lfc[:, level_idx] - lfc.mean(axis=1, keepdims=True)
    mu = 2.0**log2_mu * sf[None, :]
    ratio = np.ones(n_genes)
    if dispersion_ratio != 1.0:  # drawn only when used, so other seeds' data stay as they were
        ratio = np.where(rng.random(n_genes) < frac_dispersion_change, float(dispersion_ratio), 1.0)
    disp_obs = disp[:, None] * np.where(level_idx > 0, ratio[:, None], 1.0)  # (gene, obs)
    if np.all(disp == 0):
        y = rng.poisson(mu)
    else:
        size = 1.0 / np.maximum(disp_obs, 1e-12)
        y = rng.negative_binomial(size, size / (size + mu))

    zero_prob = np.zeros(n_genes)
    zero_lor = np.zeros(n_genes)
    if zero_effect is not None:
        changes = rng.random(n_genes) < zero_effect[0]
        zero_lor[changes] = rng.normal(0.0, zero_effect[1], int(changes.sum()))
    # (gene, obs) zero log-odds shift: groups after the first move by the gene's log odds ratio.
    zero_shift = zero_lor[:, None] * (level_idx > 0)[None, :]
    if zero_inflation is not None and hurdle is not None:
        raise ValueError("choose zero_inflation or hurdle, not both")
    if hurdle is not None:
        size = 1.0 / np.maximum(disp_obs, 1e-12)
        for _ in range(10_000):  # zero-truncation by redrawing the zeros
            redo = y == 0
            if not redo.any():
                break
            y[redo] = rng.negative_binomial(size[redo], size[redo] / (size[redo] + mu[redo]))
        logit = rng.normal(hurdle[0], hurdle[1], n_genes)
        zero_prob = 1.0 / (1.0 + np.exp(-logit))
        y = np.where(rng.random(y.shape) < 1.0 / (1.0 + np.exp(-(logit[:, None] + zero_shift))), 0, y)
    if zero_inflation is not None:
        logit = rng.normal(zero_inflation[0], zero_inflation[1], n_genes)
        zero_prob = 1.0 / (1.0 + np.exp(-logit))
        y = np.where(rng.random(y.shape) < 1.0 / (1.0 + np.exp(-(logit[:, None] + zero_shift))), 0, y)

    counts = pd.DataFrame(y.astype(np.int64), index=genes, columns=obs)
    samples = pd.DataFrame({"group": group, "size_factor": sf}, index=obs)
    truth = pd.DataFrame(
        {
            "true_base_mean": mu0,
            "true_log2fc": lfc[:, 1] if n_groups > 1 else 0.0,
            "true_dispersion": disp,
            "true_dispersion_ratio": ratio,
            "is_de": is_de,
            "true_zero_prob": zero_prob,
            "true_zero_log_odds_ratio": zero_lor,
        },
        index=genes,
    )
    params = dict(
        n_genes=n_genes, n_per_group=n_per_group, n_groups=n_groups, frac_de=frac_de, lfc_sd=lfc_sd,
        a0=a0, a1=a1, sigma_d=sigma_d, base_mean=base_mean, dispersion=dispersion,
        zero_inflation=None if zero_inflation is None else list(zero_inflation),
        hurdle=None if hurdle is None else list(hurdle), dispersion_ratio=dispersion_ratio,
        frac_dispersion_change=frac_dispersion_change,
        zero_effect=None if zero_effect is None else list(zero_effect), random_seed=random_seed,
    )
    return Simulation(counts=counts, samples=samples[["group"]], truth=truth, params=params)


def simulate_cells(n_genes: int = 300, n_donors_per_group: int = 4, cells_per_donor: int = 250,
                   donor_sd: float = 0.3, donor_sd_spread: float = 0.0, frac_de: float = 0.0, lfc_sd: float = 1.0,
                   mean_log: float = 0.0, mean_log_sd: float = 1.0, dispersion: float = 0.2,
                   random_seed: int | None = None) -> Simulation:
    """Cell-level counts with donor effects: the pseudo-replication setting.

    Each gene's log mean in donor ``d`` is ``log mu0_g + lfc_g [condition B]
    + u_gd`` with donor effects ``u_gd ~ N(0, donor_sd)``; each cell draws
    ``NB(mu * library size, dispersion)`` with log-normal library sizes (sd 0.3).
    Cells of one donor share ``u_gd``, so they are not independent replicates
    of the condition.

    Parameters
    ----------
    n_genes, n_donors_per_group, cells_per_donor : int
    donor_sd : float
        Sd of the donor effects on the log mean (known truth for RE templates).
    donor_sd_spread : float
        Gene-to-gene sd of ``log donor_sd_g`` (0: every gene has ``donor_sd``).
    frac_de, lfc_sd : float
        Fraction of genes with a condition effect and the sd of their log2 fold change.
    mean_log, mean_log_sd : float
        Per-cell mean counts are log-normal with these parameters.
    dispersion : float
        NB dispersion of cells around their donor mean.
    random_seed : int

    Returns
    -------
    Simulation
        ``counts`` genes x cells; ``samples`` per cell: ``donor``,
        ``condition`` (``A``/``B``) and ``group`` (= condition); ``truth`` per
        gene: ``true_base_mean``, ``true_log2fc``, ``is_de``, ``true_donor_sd``;
        ``design`` ``"~ condition"``.

    Examples
    --------
    >>> sim = simulate_cells(n_genes=20, n_donors_per_group=2, cells_per_donor=10, random_seed=0)
    >>> sim.counts.shape, sim.samples.donor.nunique()
    ((20, 40), 4)
    """
    rng = np.random.default_rng(random_seed)
    n_donors = 2 * n_donors_per_group
    donors = [f"d{i}" for i in range(n_donors)]
    condition = np.repeat(["A", "B"], n_donors_per_group)
    mu0 = np.exp(rng.normal(mean_log, mean_log_sd, n_genes))
    is_de = rng.random(n_genes) < frac_de
    lfc = np.where(is_de, rng.normal(0.0, lfc_sd, n_genes), 0.0)
    sd_g = donor_sd * np.exp(rng.normal(0.0, donor_sd_spread, n_genes)) if donor_sd_spread > 0 else np.full(n_genes, donor_sd)
    u = rng.normal(0.0, 1.0, (n_genes, n_donors)) * sd_g[:, None]
    log_mu_donor = np.log(mu0)[:, None] + np.log(2.0) * lfc[:, None] * (condition == "B")[None, :] + u
    cell_donor = np.repeat(np.arange(n_donors), cells_per_donor)
    lib = np.exp(rng.normal(0.0, 0.3, cell_donor.size))
    mu = np.exp(log_mu_donor[:, cell_donor]) * lib[None, :]
    size = 1.0 / dispersion
    y = rng.negative_binomial(size, size / (size + mu))
    cells = pd.Index([f"cell{i:05d}" for i in range(cell_donor.size)], name="cell")
    genes = pd.Index([f"gene{i:05d}" for i in range(n_genes)], name="gene")
    samples = pd.DataFrame({"donor": np.array(donors)[cell_donor], "condition": condition[cell_donor]}, index=cells)
    samples["group"] = samples["condition"]
    truth = pd.DataFrame({"true_base_mean": mu0, "true_log2fc": lfc, "is_de": is_de,
                          "true_donor_sd": sd_g}, index=genes)
    params = dict(n_genes=n_genes, n_donors_per_group=n_donors_per_group, cells_per_donor=cells_per_donor,
                  donor_sd=donor_sd, donor_sd_spread=donor_sd_spread, frac_de=frac_de, lfc_sd=lfc_sd, dispersion=dispersion, random_seed=random_seed)
    return Simulation(counts=pd.DataFrame(y.astype(np.int64), index=genes, columns=cells), samples=samples,
                      truth=truth, params=params, design="~ condition")
