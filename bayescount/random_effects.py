"""Random-effect terms of a design formula: ``(1|donor)``, ``(1 + x|donor)``, several groupings.

The formula is parsed by :mod:`formulae` (the parser bambi uses); nothing
here parses formula text. Every term ``expr|factor`` gets one column per
level of the grouping factor and its own scale. As in bambi,
``(1 + x|g)`` is two terms, ``1|g`` and ``x|g``, with independent effects
(no intercept-slope correlation, like lme4's ``(1 + x || g)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import InputError


@dataclass(frozen=True)
class RandomEffects:
    """Group-level columns of a design.

    Attributes
    ----------
    terms : tuple of str
        One entry per scale, e.g. ``("1|donor", "x|donor")``.
    columns : tuple of str
        One per group-level effect, e.g. ``"1|donor[d1]"``.
    term_of : numpy.ndarray
        ``(n_columns,)`` index into ``terms``.
    matrix : numpy.ndarray
        ``(n_obs, n_columns)`` design of the group-level effects.
    factors : dict
        Term -> grouping variable.
    """

    terms: tuple[str, ...]
    columns: tuple[str, ...]
    term_of: np.ndarray
    matrix: np.ndarray
    factors: dict[str, str]

    @property
    def n_terms(self) -> int:
        return len(self.terms)


def _description(text: str):
    import formulae

    try:
        return formulae.model_description(text)
    except Exception as exc:
        raise InputError(f"cannot parse formula {text!r}: {exc}") from None


def split_formula(formula: str) -> tuple[str, tuple[str, ...]]:
    """The fixed-effects part of a right-hand side, rebuilt from its parsed terms, and the group terms.

    Examples
    --------
    >>> split_formula("~ cond + (1 + cond|donor)")
    ('~ 1 + cond', ('1|donor', 'cond|donor'))
    >>> split_formula("~ 0 + x")
    ('~ 0 + x', ())
    """
    rhs = formula.strip().lstrip("~").strip()
    md = _description(rhs)
    names = [t.name for t in md.common_terms]
    fixed = ["1" if n == "Intercept" else n for n in names]
    if "1" not in fixed:
        fixed.insert(0, "0")
    return "~ " + " + ".join(fixed), tuple(t.name for t in md.group_terms)


def build_random_effects(formula: str, samples: pd.DataFrame) -> RandomEffects | None:
    """Group-level design of ``formula`` on ``samples``; None without group terms.

    Columns that are zero for every observation (a slope for a level the
    group never has) are dropped: the data say nothing about them.

    Examples
    --------
    >>> s = pd.DataFrame({"cond": list("AABB"), "donor": ["d1", "d2", "d3", "d4"]})
    >>> re = build_random_effects("~ cond + (1|donor)", s)
    >>> re.terms, re.columns[:2], re.matrix.shape
    (('1|donor',), ('1|donor[d1]', '1|donor[d2]'), (4, 4))
    """
    import formulae

    rhs = formula.strip().lstrip("~").strip()
    md = _description(rhs)
    if not md.group_terms:
        return None
    for t in md.group_terms:
        for var in sorted(t.factor.var_names if hasattr(t.factor, "var_names") else []):
            if var not in samples.columns:
                raise InputError(f"grouping variable {var!r} of {t.name!r} is not a column of the sample table "
                                 f"(columns: {list(samples.columns)})")
            if samples[var].isna().any():
                raise InputError(f"grouping column {var!r} has missing values; fill them or drop those samples")
            if samples[var].nunique() < 2:
                raise InputError(f"grouping variable {var!r} of {t.name!r} has one level; a random effect needs "
                                 "at least 2 groups")
    frame = samples.copy()
    for c in frame.columns:
        if isinstance(frame[c].dtype, pd.CategoricalDtype):
            frame[c] = frame[c].astype(str)
    group_text = " + ".join(f"({t.name})" for t in md.group_terms)
    try:
        dm = formulae.design_matrices(group_text, frame)
    except Exception as exc:
        raise InputError(f"cannot build the random effects {group_text!r}: {exc}") from None
    terms, columns, term_of, blocks, factors = [], [], [], [], {}
    for name, term in dm.group.terms.items():
        Z = np.asarray(dm.group[name].toarray() if hasattr(dm.group[name], "toarray") else dm.group[name], float)
        used = np.any(Z != 0, axis=0)
        if not used.any():
            raise InputError(f"random-effect term {name!r} is zero for every observation")
        t = len(terms)
        terms.append(name)
        factors[name] = name.split("|", 1)[1]
        columns.extend(lab for lab, u in zip(term.labels, used) if u)
        term_of.extend([t] * int(used.sum()))
        blocks.append(Z[:, used])
    return RandomEffects(terms=tuple(terms), columns=tuple(columns), term_of=np.array(term_of, dtype=int),
                         matrix=np.column_stack(blocks), factors=factors)
