"""The count data layer: validated counts, sample table, design and offsets.

A :class:`CountData` is the only thing the model builders read. Validation
happens once, here, and every problem gets a one-line message that says
what is wrong and how to fix it.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .design import Design, build_design, prepare_factors
from .errors import InputError

log = logging.getLogger(__name__)

SIZE_FACTOR_METHODS = ("ratio", "poscounts", "none")


@dataclass(frozen=True)
class DispersionGroups:
    """One dispersion per level of ``column``: ``codes[s]`` is sample ``s``'s level."""

    column: str
    levels: tuple[str, ...]
    codes: np.ndarray

    def labels(self, stem: str = "log_dispersion") -> tuple[str, ...]:
        return tuple(f"{stem}[{lv}]" for lv in self.levels)


@dataclass(frozen=True)
class CountData:
    """Counts (genes x observations) with their sample table and design.

    Build it with :meth:`from_pandas`, :meth:`from_csv` or :meth:`from_tidy`.

    Attributes
    ----------
    counts : numpy.ndarray
        ``(n_genes, n_obs)`` int64 counts; genes that were all zero are removed.
    genes : pandas.Index
        Gene ids (coordinate ``gene``).
    samples : pandas.DataFrame
        Sample table indexed by observation id (coordinate ``obs``), in the
        order of the count columns.
    design : Design
        The design matrix and its coefficient names (coordinate ``coef``).
    size_factors : numpy.ndarray
        ``(n_obs,)`` positive normalization factors.
    offset : numpy.ndarray
        ``(n_obs,)`` log-scale offset entering the linear predictor
        (``log(size_factors)``, or the user's offset for tidy data).
    n_dropped_zero : int
        Number of all-zero genes removed.
    flags : numpy.ndarray
        ``(n_genes,)`` strings; ``"all_zero_in:group=B"`` marks genes with no
        counts at some factor level (they are kept and get a finite LFC from the prior).

    Examples
    --------
    >>> import pandas as pd
    >>> counts = pd.DataFrame({"a": [5, 0, 3], "b": [6, 0, 1], "c": [9, 0, 0], "d": [7, 0, 2]},
    ...                       index=["g1", "g2", "g3"])
    >>> samples = pd.DataFrame({"group": ["A", "A", "B", "B"]}, index=list("abcd"))
    >>> d = CountData.from_pandas(counts, samples, design="~ group", size_factors="none")
    >>> d.n_genes, d.n_dropped_zero, list(d.flags)
    (2, 1, ['', ''])
    """

    counts: np.ndarray
    genes: pd.Index
    samples: pd.DataFrame
    design: Design
    size_factors: np.ndarray
    offset: np.ndarray
    n_dropped_zero: int = 0
    flags: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))
    weights: np.ndarray | None = None  # (genes, obs) observation weights, or None
    dispersion_groups: "DispersionGroups | None" = None  # per-level dispersions (with_dispersion_by)
    zero_design: Design | None = None  # covariates of the zero probability (with_zero_design)

    @property
    def n_genes(self) -> int:
        return self.counts.shape[0]

    @property
    def n_obs(self) -> int:
        return self.counts.shape[1]

    @property
    def obs(self) -> pd.Index:
        return self.samples.index

    @property
    def normalized(self) -> np.ndarray:
        """Counts divided by the size factors."""
        return self.counts / self.size_factors[None, :]

    @functools.cached_property
    def base_mean(self) -> np.ndarray:
        """Mean of normalized counts per gene (DESeq2's ``baseMean``), computed once, a block of genes at a time."""
        out = np.empty(self.counts.shape[0])
        for a in range(0, out.size, _BLOCK):
            out[a : a + _BLOCK] = (self.counts[a : a + _BLOCK] / self.size_factors[None, :]).mean(axis=1)
        return out

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_pandas(
        cls,
        counts: pd.DataFrame,
        samples: pd.DataFrame,
        design: str = "~ 1",
        size_factors="ratio",
    ) -> "CountData":
        """Build from a genes x samples count frame and a sample table.

        Parameters
        ----------
        counts : pandas.DataFrame
            Gene ids as index, one column per sample.
        samples : pandas.DataFrame
            One row per sample, indexed by the same sample ids.
        design : str
            Formula such as ``"~ group"`` or ``"~ batch + condition"``.
        size_factors : {"ratio", "poscounts", "none"} or array-like
            Median-of-ratios (DESeq2), the ``poscounts`` variant for
            zero-heavy data, none, or user-supplied positive factors.
        """
        if not isinstance(counts, pd.DataFrame) or not isinstance(samples, pd.DataFrame):
            raise InputError("counts and samples must be pandas DataFrames")
        values, genes, obs = _validate_counts(counts)
        samples = prepare_factors(_align_samples(samples, obs))
        design_ = build_design(design, samples)
        keep = values.sum(axis=1) > 0
        n_dropped = int((~keep).sum())
        if not keep.any():
            raise InputError("every gene has zero counts in every sample; nothing to fit")
        if n_dropped:
            log.info("dropped %d genes with zero counts in every sample", n_dropped)
        values, genes = values[keep], genes[keep]
        sf = compute_size_factors(values, size_factors)
        flags = _zero_level_flags(values, samples, design_)
        return cls(
            counts=values,
            genes=genes,
            samples=samples,
            design=design_,
            size_factors=sf,
            offset=np.log(sf),
            n_dropped_zero=n_dropped,
            flags=flags,
        )

    @classmethod
    def from_csv(cls, counts_path, samples_path, design: str = "~ 1", size_factors="ratio") -> "CountData":
        """Read a counts CSV/TSV (gene ids in the first column) and a sample CSV/TSV.

        The delimiter is chosen from the file suffix (``.tsv``/``.txt`` → tab).
        """
        counts = read_table(counts_path, what="counts")
        samples = read_table(samples_path, what="samples")
        return cls.from_pandas(counts, samples, design=design, size_factors=size_factors)

    @classmethod
    def from_tidy(
        cls,
        frame: pd.DataFrame,
        response: str,
        design: str = "~ 1",
        offset: str | np.ndarray | None = None,
        name: str | None = None,
    ) -> "CountData":
        """One count response from a tidy table (one row per observation).

        This is the ``glm.nb`` use: the response becomes a single "gene" and
        the offset (e.g. ``log(person_years)``) enters the linear predictor
        with coefficient 1.

        Parameters
        ----------
        frame : pandas.DataFrame
        response : str
            Column holding the counts.
        design : str
            Right-hand side formula, e.g. ``"~ age + smoker"``.
        offset : str or array-like, optional
            Column name or values of the log-scale offset.

        Examples
        --------
        >>> import numpy as np, pandas as pd
        >>> df = pd.DataFrame({"deaths": [3, 5, 2, 9], "smoker": ["n", "y", "n", "y"],
        ...                    "py": [100., 120., 90., 150.]})
        >>> df["log_py"] = np.log(df["py"])
        >>> d = CountData.from_tidy(df, "deaths", "~ smoker", offset="log_py")
        >>> d.n_genes, d.n_obs
        (1, 4)
        """
        if response not in frame.columns:
            raise InputError(f"response column {response!r} not found; columns: {list(frame.columns)}")
        frame = frame.reset_index(drop=True)
        frame.index = pd.Index([f"obs{i}" for i in range(len(frame))], name="obs")
        counts = frame[[response]].T
        counts.index = pd.Index([name or response])
        values, genes, obs = _validate_counts(counts)
        samples = prepare_factors(frame.drop(columns=[response]))
        design_ = build_design(design, samples)
        if offset is None:
            off = np.zeros(len(frame))
        else:
            off = frame[offset].to_numpy(dtype=float) if isinstance(offset, str) else np.asarray(offset, float)
            if off.shape != (len(frame),) or not np.all(np.isfinite(off)):
                raise InputError("offset must be finite with one value per row (take logs of exposures > 0)")
        if values.sum() == 0:
            raise InputError(f"response {response!r} is zero in every row; nothing to fit")
        return cls(
            counts=values,
            genes=genes,
            samples=samples,
            design=design_,
            size_factors=np.exp(off),
            offset=off,
            n_dropped_zero=0,
            flags=np.array([""], dtype=object),
        )

    def subset_genes(self, index) -> "CountData":
        """A copy restricted to some genes (positions, boolean mask or ids)."""
        if isinstance(index, (list, pd.Index)) and len(index) and isinstance(list(index)[0], str):
            index = self.genes.get_indexer(index)
        return CountData(
            counts=self.counts[index],
            genes=self.genes[index],
            samples=self.samples,
            design=self.design,
            size_factors=self.size_factors,
            offset=self.offset,
            n_dropped_zero=self.n_dropped_zero,
            flags=self.flags[index],
            weights=None if self.weights is None else self.weights[index],
            dispersion_groups=self.dispersion_groups,
            zero_design=self.zero_design,
        )

    def with_weights(self, weights) -> "CountData":
        """A copy whose observations carry likelihood weights.

        Parameters
        ----------
        weights : str, array-like or pandas.DataFrame
            A sample-table column (one weight per sample), a vector over
            samples, or a genes x samples matrix (DataFrame aligned by gene and
            sample ids, or an array in this object's order).

        Weights multiply each observation's log-likelihood. They express
        *precision* (a sample known to be noisier, an observation that stands
        for several): a weight of 2 is the same as the observation twice. They
        are not a fix for unequal group sizes, which the likelihood already
        handles (see the DESeq2 support thread in the project brief).

        Examples
        --------
        >>> import numpy as np, pandas as pd
        >>> c = pd.DataFrame({"s1": [5, 0], "s2": [3, 1]}, index=["g1", "g2"])
        >>> d = CountData.from_pandas(c, pd.DataFrame({"w": [1.0, 0.5]}, index=["s1", "s2"]),
        ...                           size_factors="none").with_weights("w")
        >>> d.weights.tolist()
        [[1.0, 0.5], [1.0, 0.5]]
        """
        if isinstance(weights, str):
            if weights not in self.samples.columns:
                raise InputError(f"weights column {weights!r} not in the sample table; columns: "
                                 f"{list(self.samples.columns)}")
            w = np.broadcast_to(pd.to_numeric(self.samples[weights], errors="coerce").to_numpy(float),
                                self.counts.shape)
        elif isinstance(weights, pd.DataFrame):
            missing = self.genes.difference(weights.index.map(str)).tolist()[:3] + \
                self.obs.difference(weights.columns.map(str)).tolist()[:3]
            if missing:
                raise InputError(f"weights matrix lacks genes/samples {missing}; give one weight per count")
            frame = weights.copy()
            frame.index, frame.columns = frame.index.map(str), frame.columns.map(str)
            w = frame.loc[self.genes, self.obs].to_numpy(float)
        else:
            w = np.asarray(weights, dtype=float)
            if w.shape == (self.n_obs,):
                w = np.broadcast_to(w, self.counts.shape)
            elif w.shape != self.counts.shape:
                raise InputError(f"weights must have {self.n_obs} values (one per sample) or shape "
                                 f"{self.counts.shape} (genes x samples), got {w.shape}")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise InputError("weights must be finite and >= 0 (missing, negative or infinite values found)")
        if np.any(w.sum(axis=1) == 0):
            raise InputError("some genes have weight 0 in every sample; give them positive weights or drop them")
        return dataclasses.replace(self, weights=np.ascontiguousarray(w, dtype=float))

    def with_dispersion_by(self, column: str | None) -> "CountData":
        """A copy whose genes get one dispersion per level of a sample-table factor.

        Each gene's log-dispersion at every level gets the template's
        dispersion prior (for ``nb_trend``: the shared trend at the gene's
        base mean with scatter ``sigma_d``), so the levels are shrunk to the
        trend, not to each other. Use it when one group is more variable than
        another (tumour vs normal, a noisier batch); check that it is
        warranted with :func:`bayescount.compare_evidence`.

        Parameters
        ----------
        column : str or None
            A categorical sample-table column with at least two levels, each
            with at least two samples; ``None`` returns one shared dispersion.

        Examples
        --------
        >>> import pandas as pd
        >>> counts = pd.DataFrame([[5, 6, 9, 7]], index=["g1"], columns=list("abcd"))
        >>> samples = pd.DataFrame({"group": ["A", "A", "B", "B"]}, index=list("abcd"))
        >>> d = CountData.from_pandas(counts, samples, design="~ group").with_dispersion_by("group")
        >>> d.dispersion_groups.levels, d.dispersion_groups.codes.tolist()
        (('A', 'B'), [0, 0, 1, 1])
        """
        if column is None:
            return dataclasses.replace(self, dispersion_groups=None)
        if column not in self.samples.columns:
            raise InputError(f"dispersion_by column {column!r} not in the sample table; columns: "
                             f"{list(self.samples.columns)}")
        values = self.samples[column]
        if values.isna().any():
            raise InputError(f"dispersion_by column {column!r} has missing values; fill or drop those samples")
        cat = pd.Categorical(values.astype(str))
        levels = tuple(str(v) for v in cat.categories)
        counts = np.bincount(cat.codes, minlength=len(levels))
        if len(levels) < 2:
            raise InputError(f"dispersion_by column {column!r} has one level; a per-level dispersion needs two or more")
        if counts.min() < 2:
            few = [lv for lv, n in zip(levels, counts) if n < 2]
            raise InputError(f"dispersion_by column {column!r}: level(s) {few} have fewer than 2 samples, "
                             "so their dispersion is not identified; merge levels or drop dispersion_by")
        if len(levels) > 4:
            raise InputError(f"dispersion_by column {column!r} has {len(levels)} levels; at most 4 are supported "
                             "(each gene's dispersions are integrated on a product grid)")
        groups = DispersionGroups(column=column, levels=levels, codes=np.asarray(cat.codes, dtype=np.int64))
        return dataclasses.replace(self, dispersion_groups=groups)

    def with_zero_design(self, formula: str | None) -> "CountData":
        """A copy whose zero probability (ZINB's structural zeros, the hurdle's zeros) has covariates.

        Each gene's zero logit becomes ``Z_s gamma_g`` with ``Z`` built from
        ``formula`` and the sample table (formulaic, like the count design).
        The intercept keeps the template's zero-inflation prior (learned
        across genes); the other coefficients get ``Normal(0, coef_sigma)``
        from the same part. :meth:`bayescount.Fit.zero_effect` reports their
        contrasts per gene.

        Parameters
        ----------
        formula : str or None
            e.g. ``"~ group"``; it must have an intercept. ``None`` or ``"~ 1"``:
            one zero probability per gene.

        Examples
        --------
        >>> import pandas as pd
        >>> counts = pd.DataFrame([[0, 6, 0, 7]], index=["g1"], columns=list("abcd"))
        >>> samples = pd.DataFrame({"group": ["A", "A", "B", "B"]}, index=list("abcd"))
        >>> d = CountData.from_pandas(counts, samples, design="~ group", size_factors="none").with_zero_design("~ group")
        >>> d.zero_design.coef
        ('Intercept', 'group[T.B]')
        """
        if formula is None or formula.replace(" ", "").lstrip("~") in ("", "1"):
            return dataclasses.replace(self, zero_design=None)
        if not formula.strip().startswith("~"):
            formula = "~ " + formula
        zd = build_design(formula, self.samples)
        if zd.random is not None:
            raise InputError(f"zero-part formula {formula!r}: random effects are not supported in the zero part")
        if not zd.coef or zd.coef[0] != "Intercept":
            raise InputError(f"zero-part formula {formula!r} needs an intercept (the gene's baseline zero "
                             "probability); drop '0 +' / '- 1'")
        return dataclasses.replace(self, zero_design=zd)

    def summary(self) -> dict:
        """Plain numbers describing the data, for logs and reports."""
        return {
            "n_genes": self.n_genes,
            "n_obs": self.n_obs,
            "n_dropped_all_zero": self.n_dropped_zero,
            "n_flagged_zero_level": int(np.sum(self.flags != "")),
            "design": self.design.formula,
            "coef": list(self.design.coef),
        }


# ---------------------------------------------------------------------- helpers
def read_table(path, what: str, index: bool = True) -> pd.DataFrame:
    """Read a CSV/TSV whose first column holds the row ids (``index=False``: a plain table)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} file {str(path)!r} does not exist")
    sep = "\t" if p.suffix.lower() in {".tsv", ".txt", ".tab"} else ","
    try:
        frame = pd.read_csv(p, sep=sep, index_col=0 if index else None)
    except Exception as exc:
        raise InputError(f"cannot read {what} file {str(path)!r}: {exc}") from None
    if frame.shape[1] <= (0 if index else 1) and sep == ",":
        frame = pd.read_csv(p, sep="\t", index_col=0 if index else None)
    frame.index = frame.index.map(str)
    frame.columns = frame.columns.map(str)
    return frame


def _validate_counts(counts: pd.DataFrame):
    if counts.shape[0] == 0 or counts.shape[1] == 0:
        raise InputError(
            f"count matrix is empty ({counts.shape[0]} genes x {counts.shape[1]} samples); "
            "check the file and its delimiter"
        )
    genes = pd.Index(counts.index.map(str), name="gene")
    obs = pd.Index(counts.columns.map(str), name="obs")
    dup = obs[obs.duplicated()].unique().tolist()
    if dup:
        raise InputError(f"sample ids duplicated in the count columns: {dup[:5]}; make them unique")
    dup = genes[genes.duplicated()].unique().tolist()
    if dup:
        raise InputError(f"gene ids duplicated in the count rows: {dup[:5]}; make them unique or sum them")
    dtypes = counts.dtypes  # one dtype per column, without building each column (2,000 cells: 0.1 s)
    bad_cols = [c for c, t in zip(counts.columns, dtypes) if not pd.api.types.is_numeric_dtype(t)]
    if bad_cols:
        raise InputError(
            f"count columns {list(map(str, bad_cols[:5]))} are not numeric; "
            "the first column must hold gene ids and the rest counts"
        )
    if all(pd.api.types.is_integer_dtype(t) for t in dtypes):
        # Integer columns need only the sign check; no float copy of the matrix.
        values = counts.to_numpy(dtype=np.int64)
        neg = values < 0
        if neg.any():
            raise InputError(f"counts contain {int(neg.sum())} negative values {_where(neg, genes, obs)}; "
                             "counts must be >= 0")
        return values, genes, obs
    # Other numeric columns: checked and converted a block of genes at a time (bounded memory).
    values = np.empty(counts.shape, dtype=np.int64)
    problems = {"nan": [0, None], "inf": [0, None], "neg": [0, None], "frac": [0, None]}
    for a in range(0, counts.shape[0], _BLOCK):
        block = counts.iloc[a : a + _BLOCK].to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            masks = {"nan": np.isnan(block), "inf": np.isinf(block), "neg": block < 0,
                     "frac": np.isfinite(block) & (block != np.round(block))}
        for key, mask in masks.items():
            if mask.any():
                problems[key][0] += int(mask.sum())
                if problems[key][1] is None:
                    i, j = np.argwhere(mask)[0]
                    problems[key][1] = f"(first at gene {genes[a + i]!r}, sample {obs[j]!r})"
        if not any(p[0] for p in problems.values()):
            values[a : a + _BLOCK] = block.astype(np.int64)
    (n_nan, at_nan), (n_inf, at_inf), (n_neg, at_neg), (n_frac, at_frac) = problems.values()
    if n_nan:
        raise InputError(f"counts contain {n_nan} missing (NaN) values {at_nan}; fill or drop them")
    if n_inf:
        raise InputError(f"counts contain {n_inf} infinite values {at_inf}; counts must be finite")
    if n_neg:
        raise InputError(f"counts contain {n_neg} negative values {at_neg}; counts must be >= 0")
    if n_frac:
        raise InputError(
            f"counts contain {n_frac} non-integer values {at_frac}; "
            "give raw integer counts, not normalized or TPM values"
        )
    return values, genes, obs


#: Genes per block when scanning the count matrix.
_BLOCK = 4096


def _where(mask, genes, obs) -> str:
    i, j = np.argwhere(mask)[0]
    return f"(first at gene {genes[i]!r}, sample {obs[j]!r})"


def _align_samples(samples: pd.DataFrame, obs: pd.Index) -> pd.DataFrame:
    samples = samples.copy()
    samples.index = pd.Index(samples.index.map(str), name="obs")
    dup = samples.index[samples.index.duplicated()].unique().tolist()
    if dup:
        raise InputError(f"sample ids duplicated in the sample table: {dup[:5]}; make them unique")
    # Membership by hashing, once per side: a per-id scan of the other side is quadratic in
    # the number of samples (2,000 cells took 2.7 s; an atlas of 10^5 cells would take hours).
    missing = obs[~obs.isin(samples.index)].tolist()
    if missing:
        raise InputError(
            f"samples {missing[:5]} are in the counts but not in the sample table; "
            "add them or drop those count columns"
        )
    extra = samples.index[~samples.index.isin(obs)].tolist()
    if extra:
        raise InputError(
            f"samples {extra[:5]} are in the sample table but not in the counts; "
            "remove them from the table or add their counts"
        )
    return samples.loc[obs]


def compute_size_factors(counts: np.ndarray, method="ratio") -> np.ndarray:
    """Size factors by DESeq2's median-of-ratios, its ``poscounts`` variant, or given.

    Parameters
    ----------
    counts : numpy.ndarray
        ``(n_genes, n_obs)`` counts.
    method : {"ratio", "poscounts", "none"} or array-like

    Examples
    --------
    >>> import numpy as np
    >>> c = np.array([[10, 20], [30, 60], [5, 10]])
    >>> np.round(compute_size_factors(c), 4)
    array([0.7071, 1.4142])
    """
    n_obs = counts.shape[1]
    if not isinstance(method, str):
        sf = np.asarray(method, dtype=float)
        if sf.shape != (n_obs,) or not np.all(np.isfinite(sf)) or np.any(sf <= 0):
            raise InputError(f"size factors must be {n_obs} positive finite numbers, one per sample")
        return sf
    if method not in SIZE_FACTOR_METHODS:
        raise InputError(f"unknown size factor method {method!r}; use one of {SIZE_FACTOR_METHODS} or give values")
    if method == "none":
        return np.ones(n_obs)
    # Per-gene log geometric means a block of genes at a time, then one median per sample:
    # memory stays a few gene vectors, not copies of the matrix.
    G = counts.shape[0]
    n_pos = np.empty(G, dtype=np.int64)
    sum_log = np.empty(G)
    for a in range(0, G, _BLOCK):
        block = counts[a : a + _BLOCK]
        n_pos[a : a + _BLOCK] = (block > 0).sum(axis=1)
        with np.errstate(divide="ignore"):
            sum_log[a : a + _BLOCK] = np.where(block > 0, np.log(np.maximum(block, 1)), 0.0).sum(axis=1)
    if method == "ratio":
        use = n_pos == n_obs
        if not use.any():
            raise InputError(
                "every gene has a zero in some sample, so median-of-ratios size factors are undefined; "
                "use size_factors='poscounts' (CLI: --size-factors poscounts)"
            )
        loggeo = sum_log[use] / n_obs
        sf = np.array([np.exp(np.median(np.log(counts[use, j]) - loggeo)) for j in range(n_obs)])
    else:
        # DESeq2's poscounts: geometric means over positive counts, scaled by n_pos/n.
        loggeo = sum_log / n_obs
        ok = loggeo > 0
        sf = np.empty(n_obs)
        for j in range(n_obs):
            m = ok & (counts[:, j] > 0)
            sf[j] = np.exp(np.median(np.log(counts[m, j]) - loggeo[m])) if m.any() else np.nan
        if not np.all(np.isfinite(sf)):
            raise InputError("some samples have no positive counts among usable genes; remove empty samples")
        sf = sf / np.exp(np.mean(np.log(sf)))
    if not np.all(np.isfinite(sf)) or np.any(sf <= 0):
        raise InputError("size factors could not be computed (a sample with no counts?); remove empty samples")
    return sf


def _zero_level_flags(counts: np.ndarray, samples: pd.DataFrame, design: Design) -> np.ndarray:
    out = np.full(counts.shape[0], "", dtype=object)
    # Few genes are flagged: the strings are joined for those alone.
    for factor, levels in design.factors.items():
        col = samples[factor].astype(str).to_numpy()
        for lv in levels:
            zero = np.flatnonzero(counts[:, col == lv].sum(axis=1) == 0)
            tag = f"all_zero_in:{factor}={lv}"
            out[zero] = [f"{f};{tag}" if f else tag for f in out[zero]]
    return out
