"""Design formulas to named design matrices, rank checks and contrast vectors.

Formulas are parsed by :mod:`formulaic`; nothing here parses formula text.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from formulaic import Formula, ModelSpec

from .errors import InputError
from .random_effects import RandomEffects, build_random_effects, split_formula

log = logging.getLogger(__name__)

INTERCEPT = "Intercept"


@dataclass(frozen=True)
class Design:
    """A named design matrix built from a formula and a sample table.

    Attributes
    ----------
    formula : str
        The formula as given, e.g. ``"~ group"`` or ``"~ group + (1|donor)"``.
    matrix : numpy.ndarray
        ``(n_obs, n_coef)`` float64 design matrix.
    coef : tuple of str
        Column names, e.g. ``("Intercept", "group[T.B]")``.
    factors : dict
        Categorical variables used by the formula mapped to their levels
        (reference level first).
    random : RandomEffects or None
        Group-level terms such as ``(1|donor)``; ``matrix`` and ``coef``
        hold the fixed effects only.
    """

    formula: str
    matrix: np.ndarray
    coef: tuple[str, ...]
    factors: dict[str, tuple[str, ...]]
    model_spec: ModelSpec
    random: RandomEffects | None = None

    @property
    def has_intercept(self) -> bool:
        return INTERCEPT in self.coef

    @property
    def shrunk(self) -> tuple[str, ...]:
        """Coefficients of the formula's last term: the effect of interest, which LFC priors shrink.

        Earlier terms (batch, donor, covariates) are adjustments and keep a
        wide prior, as in DESeq2 the variable of interest goes last.

        Examples
        --------
        >>> import pandas as pd
        >>> s = pd.DataFrame({"donor": list("aabb"), "group": list("ABAB")}, index=list("1234"))
        >>> build_design("~ donor + group", s).shrunk
        ('group[T.B]',)
        """
        slices = [(str(t), sl) for t, sl in self.model_spec.term_slices.items() if str(t) != "1"]
        if not slices:
            return ()
        return tuple(self.coef[slices[-1][1]])

    def contrast_vector(self, contrast, samples: pd.DataFrame) -> tuple[np.ndarray, str]:
        """Resolve a contrast to a numeric vector over coefficients.

        Parameters
        ----------
        contrast : str, sequence of 3 str, or sequence of numbers
            A coefficient name; ``[factor, level, reference]``; or a numeric
            vector of length ``n_coef`` (any linear combination).
        samples : pandas.DataFrame
            The sample table the design was built from.

        Returns
        -------
        vector : numpy.ndarray
        label : str

        Examples
        --------
        >>> import pandas as pd
        >>> s = pd.DataFrame({"group": ["A", "A", "B", "B"]}, index=list("abcd"))
        >>> d = build_design("~ group", s)
        >>> d.contrast_vector(["group", "B", "A"], s)[0]
        array([0., 1.])
        """
        if contrast is None:
            return self.default_contrast(samples)
        if isinstance(contrast, str):
            if contrast not in self.coef:
                raise InputError(
                    f"unknown coefficient {contrast!r}; choose one of {list(self.coef)}"
                )
            vec = np.zeros(len(self.coef))
            vec[self.coef.index(contrast)] = 1.0
            return vec, contrast
        items = list(contrast)
        if len(items) == 3 and all(isinstance(x, str) for x in items):
            return self._factor_contrast(*items, samples=samples)
        try:
            vec = np.asarray(items, dtype=float)
        except (TypeError, ValueError):
            raise InputError(
                "contrast must be a coefficient name, [factor, level, reference] or a numeric vector"
            ) from None
        if vec.shape != (len(self.coef),):
            raise InputError(
                f"numeric contrast has length {vec.size} but the design has {len(self.coef)} "
                f"coefficients {list(self.coef)}"
            )
        if not np.all(np.isfinite(vec)) or not np.any(vec):
            raise InputError("numeric contrast must be finite and not all zero")
        label = " + ".join(f"{w:g}*{c}" for w, c in zip(vec, self.coef) if w)
        return vec, label

    def default_contrast(self, samples: pd.DataFrame) -> tuple[np.ndarray, str]:
        """Second level against the first for a single two-level factor."""
        two_level = [f for f, lv in self.factors.items() if len(lv) == 2]
        if len(self.factors) == 1 and two_level:
            f = two_level[0]
            lv = self.factors[f]
            return self._factor_contrast(f, lv[1], lv[0], samples=samples)
        slopes = [c for c in self.coef if c != INTERCEPT]
        if len(slopes) == 1:
            return self.contrast_vector(slopes[0], samples)
        raise InputError(
            f"the design has several coefficients {slopes}; name one with --coef NAME "
            "or --contrast factor,level,reference"
        )

    def _factor_contrast(self, factor, level, reference, samples):
        if factor not in self.factors:
            raise InputError(
                f"{factor!r} is not a factor of the design {self.formula!r}; "
                f"factors: {list(self.factors)}"
            )
        levels = self.factors[factor]
        for lv in (level, reference):
            if lv not in levels:
                raise InputError(f"{factor!r} has no level {lv!r}; levels: {list(levels)}")
        if level == reference:
            raise InputError("contrast level and reference are the same level")
        vec = self._main_effect_contrast(factor, level, reference)
        if vec is not None:
            return vec, f"{factor}: {level} vs {reference}"
        # Averaging the two counterfactual design rows over the samples is exact
        # for additive designs and gives the sample-averaged effect with interactions.
        rows = []
        for lv in (level, reference):
            cf = samples.copy()
            cf[factor] = pd.Categorical([lv] * len(cf), categories=list(levels))
            mm = self.model_spec.get_model_matrix(cf)
            rows.append(np.asarray(mm, dtype=float).mean(axis=0))
        return rows[0] - rows[1], f"{factor}: {level} vs {reference}"


    def _main_effect_contrast(self, factor, level, reference):
        """The contrast read off the coefficient names where the factor is a treatment-coded main
        effect in no interaction (the counterfactual rows then differ in its columns only), else None."""
        terms = {str(t): sl for t, sl in self.model_spec.term_slices.items()}
        if factor not in terms or any(factor in t.split(":") for t in terms if t != factor):
            return None
        levels = self.factors[factor]
        names = {f"{factor}[T.{lv}]": lv for lv in levels[1:]}
        if set(self.coef[terms[factor]]) != set(names):
            return None
        vec = np.zeros(len(self.coef))
        for lv, sign in ((level, 1.0), (reference, -1.0)):
            if lv != levels[0]:
                vec[self.coef.index(f"{factor}[T.{lv}]")] += sign
        return vec


def build_design(formula: str, samples: pd.DataFrame) -> Design:
    """Build and validate a design matrix.

    Categorical columns use treatment coding with the alphabetically first
    level as reference (set a pandas ``Categorical`` to choose another).

    Raises
    ------
    InputError
        Unknown variables, empty factor levels, missing values in used
        columns, or a design that is not of full column rank (the message
        names the confounded columns).

    Examples
    --------
    >>> import pandas as pd
    >>> s = pd.DataFrame({"group": ["A", "B", "A", "B"]}, index=list("abcd"))
    >>> build_design("~ group", s).coef
    ('Intercept', 'group[T.B]')
    """
    if not isinstance(formula, str) or not formula.strip():
        raise InputError('design formula is empty; give one like "~ group"')
    text = formula.strip()
    if not text.startswith("~"):
        if "~" in text:
            raise InputError(f"design formula {formula!r} must have no response; write it as '~ ...'")
        text = "~ " + text
    samples = prepare_factors(samples)
    random = None
    if "|" in text:
        # Group-level terms such as (1|donor): formulae parses them; the fixed part goes on below.
        random = build_random_effects(text, samples)
        text = split_formula(text)[0]
    try:
        parsed = Formula(text)
        used = sorted(parsed.required_variables)
    except Exception as exc:
        raise InputError(f"cannot parse design formula {formula!r}: {exc}") from None
    missing = [v for v in used if v not in samples.columns]
    if missing:
        raise InputError(
            f"design variables {missing} are not columns of the sample table "
            f"(columns: {list(samples.columns)})"
        )
    for v in used:
        if samples[v].isna().any():
            raise InputError(f"sample table column {v!r} has missing values; fill them or drop those samples")
        if isinstance(samples[v].dtype, pd.CategoricalDtype):
            counts = samples[v].value_counts()
            empty = [str(k) for k, n in counts.items() if n == 0]
            if empty:
                raise InputError(
                    f"factor {v!r} has levels with no samples: {empty}; drop unused levels"
                )
    try:
        mm = parsed.get_model_matrix(samples, na_action="raise")
    except Exception as exc:
        raise InputError(f"cannot build the design {formula!r}: {exc}") from None
    X = np.asarray(mm, dtype=float)
    coef = tuple(str(c) for c in mm.columns)
    if X.shape[1] == 0:
        raise InputError(f"design {formula!r} has no columns")
    _check_rank(X, coef, formula)
    factors = {
        v: tuple(str(x) for x in samples[v].cat.categories)
        for v in used
        if isinstance(samples[v].dtype, pd.CategoricalDtype)
    }
    return Design(formula=formula, matrix=X, coef=coef, factors=factors, model_spec=mm.model_spec, random=random)


def prepare_factors(samples: pd.DataFrame) -> pd.DataFrame:
    """Turn string/object/bool columns into sorted categoricals."""
    out = samples.copy()
    for c in out.columns:
        col = out[c]
        if isinstance(col.dtype, pd.CategoricalDtype):
            continue
        if col.dtype == bool or not pd.api.types.is_numeric_dtype(col):
            values = col.astype(str).where(col.notna())
            out[c] = pd.Categorical(values, categories=sorted(values.dropna().unique()))
    return out


def _check_rank(X: np.ndarray, coef: tuple[str, ...], formula: str) -> None:
    n, p = X.shape
    if n <= p:
        raise InputError(
            f"design {formula!r} has {p} coefficients but only {n} samples; "
            "use a simpler design or more samples"
        )
    if np.linalg.matrix_rank(X) == p:
        return
    # Walk the columns and name each one that the previous ones already span.
    confounded = []
    kept = np.zeros((n, 0))
    for j in range(p):
        cand = np.column_stack([kept, X[:, j]])
        if np.linalg.matrix_rank(cand) > kept.shape[1]:
            kept = cand
        else:
            confounded.append(coef[j])
    raise InputError(
        f"design {formula!r} is not full rank: {confounded} are linear combinations of other "
        "columns (confounded variables); remove or merge them"
    )
