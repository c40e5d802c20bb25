"""Posterior summaries shared by every fit path: lfsr, s-values, HDIs, BH."""

from __future__ import annotations

import numpy as np
from scipy import stats


def lfsr_from_draws(draws: np.ndarray, axis: int = 0) -> np.ndarray:
    """Local false sign rate: ``min(P(x >= 0), P(x <= 0))`` along ``axis``.

    Examples
    --------
    >>> import numpy as np
    >>> float(lfsr_from_draws(np.array([1.0, 2.0, -1.0, 3.0])))
    0.25
    """
    return np.minimum((draws >= 0).mean(axis=axis), (draws <= 0).mean(axis=axis))


def lfsr_normal(mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """lfsr of a normal posterior: ``Phi(-|mean| / sd)``."""
    return stats.norm.cdf(-np.abs(mean) / sd)


def svalue(lfsr: np.ndarray) -> np.ndarray:
    """s-values (Stephens 2017): the mean lfsr of all genes at least as significant.

    Calling every gene with ``svalue < t`` keeps the expected false sign rate among calls below t.

    Examples
    --------
    >>> svalue(np.array([0.01, 0.3, 0.03]))
    array([0.01      , 0.11333333, 0.02      ])
    """
    lfsr = np.asarray(lfsr, dtype=float)
    order = np.argsort(lfsr, kind="stable")
    cummean = np.cumsum(lfsr[order]) / np.arange(1, lfsr.size + 1)
    out = np.empty_like(lfsr)
    out[order] = cummean
    return out


def hdi_from_draws(draws: np.ndarray, prob: float) -> tuple[np.ndarray, np.ndarray]:
    """Highest-density interval along axis 0 of ``(n_draws, ...)`` draws (arviz-stats)."""
    from arviz_stats.base import array_stats

    out = array_stats.hdi(np.moveaxis(draws, 0, -1), prob=prob, axis=-1)
    return out[..., 0], out[..., 1]


def hdi_normal(mean, sd, prob: float):
    z = stats.norm.ppf(0.5 + prob / 2.0)
    return mean - z * sd, mean + z * sd


def bh_adjust(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values."""
    return stats.false_discovery_control(np.asarray(pvalues, dtype=float), method="bh")
