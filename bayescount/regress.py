"""One count response from a tidy table: ``regress(frame, "art ~ fem + mar", model="nb")``.

The formula is parsed by formulaic: ``offset(...)`` terms (evaluated in the
table, e.g. ``offset(log(exposure))``) enter the linear predictor with
coefficient 1, and a part after ``|`` is the zero part of ``zinb``/``hurdle``.
The response becomes a single "gene" of the same machinery every template uses.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .data import CountData
from .errors import InputError
from .fit import fit
from .result import Fit
from .stats import mixture_summary

#: ``--model`` name -> catalog template for one response.
TIDY_TEMPLATES = {"poisson": "poisson_glm", "nb": "nb", "zinb": "zinb", "hurdle": "hurdle"}
_FUNCS = {"log": np.log, "log1p": np.log1p, "exp": np.exp, "sqrt": np.sqrt, "np": np}
COEF_COLUMNS = ["component", "term", "mean", "sd", "hdi_low", "hdi_high"]


def parse_formula(formula: str, frame: pd.DataFrame) -> tuple[str, str, np.ndarray, str | None]:
    """``(response, count-part design, offset values, zero-part formula or None)``.

    Examples
    --------
    >>> df = pd.DataFrame({"y": [1, 2], "x": [0.5, 1.0], "e": [1.0, 2.0]})
    >>> r, design, off, zero = parse_formula("y ~ x + offset(log(e)) | 1", df)
    >>> r, design, np.round(off, 3).tolist(), zero
    ('y', '~ 1 + x', [0.0, 0.693], '1')
    """
    from formulaic import Formula, model_matrix

    group_terms: tuple[str, ...] = ()
    zero_rhs = None
    try:
        parsed = Formula(formula)
        lhs, rhs = parsed.lhs, parsed.rhs
    except Exception as exc:
        # formulaic has no (1|site) terms: formulae parses those; the rest goes on as before.
        lhs, rhs, group_terms, zero_rhs = _split_random(formula, exc)
    response = str(lhs).strip()
    if not response or " " in response or "+" in response:
        raise InputError(f"formula {formula!r} needs one response column on the left of '~'")
    parts = list(rhs) if isinstance(rhs, tuple) else [rhs]
    if len(parts) > 2:
        raise InputError(f"formula {formula!r} has more than one '|': use 'y ~ count terms | zero terms'")
    terms = [str(t) for t in parts[0]]
    offsets = [t for t in terms if t.startswith("offset(")]
    keep = [t for t in terms if not t.startswith("offset(")]
    offset = np.zeros(len(frame))
    for term in offsets:
        try:
            mm = model_matrix(term, frame, context={"offset": lambda x: x, **_FUNCS})
        except Exception as exc:
            raise InputError(f"cannot evaluate {term!r} in the data: {exc}") from None
        offset += np.asarray(mm.iloc[:, -1], dtype=float)
    if not np.all(np.isfinite(offset)):
        raise InputError(f"offset {' + '.join(offsets)} is not finite for every row (log of 0 or a missing value?)")
    design = "~ " + " + ".join(keep) if keep else "~ 1"
    if group_terms:
        design += " + " + " + ".join(f"({t})" for t in group_terms)
    zero = " + ".join(str(t) for t in parts[1]) if len(parts) == 2 else None
    if zero_rhs is not None:
        zero = " + ".join(str(t) for t in zero_rhs)
    return response, design, offset, zero


def _split_random(formula: str, error: Exception):
    """Response, fixed terms and group terms of a formula with ``(expr|group)`` terms (parsed by formulae)."""
    from formulaic import Formula

    from .random_effects import split_formula

    if "~" not in formula:
        raise InputError(f"cannot parse formula {formula!r}: {error}") from None
    lhs, rhs = formula.split("~", 1)
    depth, bars = 0, []
    for i, ch in enumerate(rhs):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "|" and depth == 0:
            bars.append(i)
    if len(bars) > 1:
        raise InputError(f"formula {formula!r} has more than one '|': use 'y ~ count terms | zero terms'")
    zero_rhs = None
    if bars:
        # A zero part after a top-level '|' (formulae would drop it silently): split it off first.
        rhs, zero_text = rhs[: bars[0]], rhs[bars[0] + 1 :]
        try:
            zero_rhs = Formula(zero_text.strip() or "1")
        except Exception as exc:
            raise InputError(f"cannot parse the zero part {zero_text.strip()!r} of {formula!r}: {exc}") from None
    fixed, group_terms = split_formula(rhs)  # InputError with formulae's message when it cannot parse
    try:
        fixed_terms = Formula(fixed.lstrip("~ "))
    except Exception:
        raise InputError(f"cannot parse formula {formula!r}: {error}") from None
    if not group_terms:
        raise InputError(f"cannot parse formula {formula!r}: {error}") from None
    return lhs, fixed_terms, group_terms, zero_rhs


def regress(frame: pd.DataFrame, formula: str, model: str = "nb", method: str = "map", random_seed=None,
            hdi_prob: float = 0.95, **fit_kwargs) -> tuple[Fit, pd.DataFrame]:
    """Fit one count response; return the fit and its coefficient table.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per observation.
    formula : str
        ``"y ~ x1 + x2 + offset(log(exposure))"``; random effects as
        ``"y ~ x + (1|site)"`` (each term's scale gets a wide fixed prior and is
        integrated out); for ``zinb``/``hurdle`` an optional zero part after
        ``|`` (``| 1``, or covariates of the zero logit: ``| fem + mar``).
    model : {"poisson", "nb", "zinb", "hurdle"}

    Returns
    -------
    (Fit, pandas.DataFrame)
        The table has ``component, term, mean, sd, hdi_low, hdi_high``;
        ``component`` is ``count`` (log-mean coefficients), ``dispersion``
        (``log(dispersion)``) or ``zero`` (logit of the zero probability).
        ``table.attrs`` holds ``loglik`` (at the MAP, or at the posterior
        mean for NUTS/ADVI) and ``n_params``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"x": rng.normal(size=200)})
    >>> df["y"] = rng.poisson(np.exp(1 + 0.5 * df.x))
    >>> res, coefs = regress(df, "y ~ x", model="poisson", random_seed=1)
    >>> coefs.term.tolist(), bool(abs(coefs["mean"].iloc[1] - 0.5) < 0.15)
    (['Intercept', 'x'], True)
    """
    if model not in TIDY_TEMPLATES:
        raise InputError(f"unknown model {model!r} for one response; use one of {sorted(TIDY_TEMPLATES)}")
    response, design, offset, zero = parse_formula(formula, frame)
    if zero is not None:
        if model not in ("zinb", "hurdle"):
            raise InputError(f"a zero part after '|' needs --model zinb or hurdle, not {model!r}")
    if response not in frame.columns:
        raise InputError(f"response column {response!r} not found; columns: {list(frame.columns)}")
    data = CountData.from_tidy(frame, response, design, offset=offset)
    if zero is not None and zero.replace(" ", "") not in ("1", "1+1"):
        data = data.with_zero_design("~ " + zero)
    priors = dict(fit_kwargs.pop("priors", None) or {})
    if data.design.random is not None:
        # One response has no population of scales to learn from: a fixed wide prior per term.
        priors.setdefault("random_effects", {"part": "fixed"})
    res = fit(data, model=TIDY_TEMPLATES[model], method=method, random_seed=random_seed, priors=priors or None,
              **fit_kwargs)
    table = coefficient_table(res, hdi_prob=hdi_prob)
    table.attrs["loglik"] = loglik_at_estimate(res, data)
    table.attrs["n_params"] = len(table)
    return res, table


def coefficient_table(res: Fit, hdi_prob: float = 0.95, gene: int = 0) -> pd.DataFrame:
    """Posterior mean, sd and HDI of every coefficient and gene parameter of one gene.

    Random-effect terms add one row each (``component`` ``random``, ``term``
    ``sd(1|site)``): the posterior of that term's standard deviation.
    """
    from .stats import hdi_from_draws

    cd = res.idata["constant_data"]
    coef = list(cd["coef"].values)
    params = list(res.spec.likelihood.gene_params)
    zero_coef = [str(c) for c in cd["zero_coef"].values] if "zero_coef" in cd.coords else []
    labels = [("count", c, c) for c in coef]
    for p in params:
        if p == "log_dispersion":
            labels.append(("dispersion", "log(dispersion)", p))
        elif zero_coef:
            labels.extend(("zero", c, f"{p}[{c}]") for c in zero_coef)
        else:
            labels.append(("zero", "(Intercept)", p))
    rows = []
    post = res.idata["posterior"]
    if res.has_group("laplace"):
        lap = res.idata["laplace"]
        names = [str(n) for n in lap["param"].values]
        w = lap["mix_weight"].values[gene][None]
        mode, cov = lap["mix_mode"].values[gene], lap["mix_cov"].values[gene]
        for comp, term, name in labels:
            k = names.index(name)
            m, s, _, lo, hi = mixture_summary(w, mode[None, :, k], np.sqrt(np.maximum(cov[None, :, k, k], 1e-24)),
                                              hdi_prob)
            rows.append((comp, term, m[0], s[0], lo[0], hi[0]))
    else:
        draws = [post["beta"].values[:, :, gene, k].ravel() for k in range(len(coef))]
        for p in params:
            x = post[p].values[:, :, gene]
            draws += [x.ravel()] if x.ndim == 2 else [x[..., j].ravel() for j in range(x.shape[-1])]
        for (comp, term, _), x in zip(labels, draws):
            lo, hi = hdi_from_draws(x[:, None], hdi_prob)
            rows.append((comp, term, x.mean(), x.std(ddof=1), lo[0], hi[0]))
    if "re_sd" in post:
        for t, name in enumerate(post["re_term"].values):
            x = post["re_sd"].values[:, :, gene, t].ravel()
            lo, hi = hdi_from_draws(x[:, None], hdi_prob)
            rows.append(("random", f"sd({name})", x.mean(), x.std(ddof=1), lo[0], hi[0]))
    return pd.DataFrame(rows, columns=COEF_COLUMNS)


def loglik_at_estimate(res: Fit, data: CountData, gene: int = 0) -> float:
    """Log-likelihood at the MAP (MAP path) or at the posterior mean (NUTS/ADVI).

    With random effects it is conditional on the group-level effects at that estimate.
    """
    if res.has_group("map_stats"):
        return float(res.idata["map_stats"]["loglik"].values[gene])
    from .model import layout
    from .newton import GeneProblem

    post = res.idata["posterior"]
    theta = [post["beta"].values[:, :, gene, :].reshape(-1, post["beta"].shape[-1]).mean(axis=0)]
    if "re" in post:
        theta += [post["re"].values[:, :, gene, :].reshape(-1, post["re"].shape[-1]).mean(axis=0)]
    for p in res.spec.likelihood.gene_params:
        x = post[p].values[:, :, gene]
        theta.append(np.atleast_1d(x.reshape(x.shape[0] * x.shape[1], -1).mean(axis=0)))
    theta = np.concatenate(theta)[None]
    prob = GeneProblem(res.spec, data.subset_genes(np.array([gene])), layout(res.spec, data))
    return float(prob.loglik(theta, np.array([0]))[0])
