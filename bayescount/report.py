"""One self-contained HTML report of one or more fits: data, priors, diagnostics, results, plots, comparison.

Rendered from a jinja2 template shipped in the package; figures are PNGs
embedded as base64, so the file can be mailed or archived on its own.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError
from .io import atomic_path
from .result import Fit

log = logging.getLogger(__name__)
TOP_GENES = 50


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _html(frame: pd.DataFrame, sortable: bool = False) -> str:
    return frame.to_html(index=False, float_format=lambda x: f"{x:.4g}", border=0,
                         classes="sortable" if sortable else None, na_rep="")


def verdicts(genes: pd.DataFrame | None, overall: pd.DataFrame) -> list[str]:
    """Plain-language sentence per template from a comparison table (and per-gene preferences)."""
    best = overall.iloc[0]
    out = []
    for r in overall.itertuples():
        pref = ""
        if genes is not None and len(genes) > 1:
            n = int((genes.preferred == r.model).sum())
            pref = f"; preferred by {n} of {len(genes)} genes ({n / len(genes):.0%})"
        if r.rank == 0:
            out.append(f"{r.model}: best overall (ELPD {r.elpd:,.1f} ± {r.se:,.1f}){pref}.")
            continue
        d, dse = -float(r.elpd_diff), float(r.dse)
        if d > 4 * dse:
            word = f"clearly worse than {best.model}"
        elif d > 2 * dse:
            word = f"worse than {best.model}"
        else:
            word = f"not distinguishable from {best.model}"
        out.append(f"{r.model}: {word} (ELPD lower by {d:,.1f} ± {dse:,.1f}){pref}.")
    if genes is not None and len(genes) > 1:
        n = int((genes.preferred == "no preference").sum())
        out.append(f"{n} genes ({n / len(genes):.0%}) show no preference (difference within 2 SE).")
    return out


def write_report(fits: dict[str, Fit] | Fit, path, comparison=None, contrast=None, ic: str = "loo",
                 memory="1GB") -> Path:
    """Write the HTML report of ``fits`` to ``path`` (atomically).

    Parameters
    ----------
    fits : Fit or dict of str to Fit
        Fits of one data set; with two or more the report compares them.
    path : str or Path
    comparison : (genes, overall), optional
        The output of :func:`bayescount.compare`, if already computed.
    contrast : optional
        The contrast of the results table and plots (default: the fit's default contrast).
    ic : {"loo", "waic"}
        Criterion of the comparison when it is computed here.

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from bayescount import simulate, fit
    >>> res = fit(simulate(n_genes=40, n_per_group=3, random_seed=1).data, random_seed=1)
    >>> out = write_report(res, pathlib.Path(tempfile.mkdtemp()) / "r.html")
    >>> "Diagnostics" in out.read_text()
    True
    """
    import jinja2

    from .compare import compare
    from .diagnostics import diagnostics
    from .loo import loo
    from .plots import (plot_compare, plot_dispersion, plot_lfc_intervals, plot_ma, plot_pareto_k, plot_ppc,
                        plot_volcano)
    from .ppc import ppc
    from .regress import coefficient_table

    if isinstance(fits, Fit):
        fits = {fits.spec.name: fits}
    if not fits:
        raise InputError("write_report needs at least one fit")
    if comparison is None and len(fits) > 1:
        comparison = compare(fits, ic=ic, memory=memory)
    order = list(comparison[1].model) if comparison is not None else list(fits)
    main_name = order[0]
    main = fits[main_name]
    one_response = len(main.genes) == 1

    fit_ctx, loos = [], {}
    for name, res in fits.items():
        _, checks = diagnostics(res, warn=False)
        lo = loo(res, memory=memory)
        loos[name] = lo
        checks_ppc = ppc(res, memory=memory)
        outl = lo.outliers().head(20)
        fit_ctx.append({
            "name": name, "template": res.spec.name, "method": res.method, "spec_hash": res.spec.hash,
            "seed": res.random_seed, "design": res.idata.attrs.get("design", ""),
            "hyper": {k: np.round(np.asarray(v, dtype=float), 4).tolist() for k, v in res.hyper.items()},
            "spec_json": json.dumps(json.loads(res.spec.to_json()), indent=2),
            "checks": list(checks.itertuples()), "ppc_failed": checks_ppc.attrs["failed_genes"],
            "n_outliers": int(len(lo.outliers())), "outliers_html": _html(outl),
        })

    figures = []
    if one_response:
        table = coefficient_table(main)
        note = "Coefficients: posterior mean, sd and 95% HDI (count part on the log scale, zero part on the logit scale)."
        gene = str(main.genes[0])
    else:
        try:
            lfc = main.lfc(contrast)
        except InputError as exc:
            raise InputError(f"the report needs a contrast for {main_name!r}: {exc}") from None
        table = lfc.sort_values("svalue").head(TOP_GENES)
        note = (f"Top {len(table)} genes by s-value for {lfc.attrs.get('contrast', '')}; "
                f"{int((lfc.svalue < 0.05).sum())} of {len(lfc)} genes have svalue < 0.05. Click a header to sort.")
        gene = str(table.gene.iloc[0])
        figures += [(plot_ma(main, contrast), "MA plot"), (plot_volcano(main, contrast), "Volcano (lfsr)")]
        if "dispersion" in main.gene_summary():
            figures.append((plot_dispersion(main), "Dispersion vs mean with the learned trend"))
        figures.append((plot_lfc_intervals(main, list(table.gene.head(12)), contrast), "LFC intervals, top genes"))
    figures.append((plot_ppc(main, gene), f"Posterior predictive check of {gene}"))
    figures.append((plot_pareto_k(loos[main_name]), "Pareto k per observation"))
    comp_ctx = None
    if comparison is not None:
        genes_cmp, overall = comparison
        figures.append((plot_compare(overall), "Template comparison"))
        pref = None
        if len(genes_cmp) > 1:
            pref = genes_cmp.preferred.value_counts().rename_axis("preferred").reset_index(name="genes")
        comp_ctx = {"ic": overall.attrs.get("ic", ic).upper(), "verdicts": verdicts(genes_cmp, overall),
                    "overall_html": _html(overall), "preferred_html": _html(pref) if pref is not None else ""}

    data_summary = {"genes": len(main.genes), "samples": main.idata["observed_data"].sizes["obs"],
                    "design": main.idata.attrs.get("design", ""),
                    "all-zero genes dropped": main.idata.attrs.get("n_dropped_all_zero", 0)}
    samples = main.samples
    env = jinja2.Environment(loader=jinja2.PackageLoader("bayescount", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]))
    html = env.get_template("report.html.j2").render(
        title="bayescount report", version=version("bayescount") if _installed() else "dev",
        fits=fit_ctx, data_summary=data_summary, samples_html=_html(samples.reset_index().head(30)),
        main={"name": main_name, "table_html": _html(table, sortable=True)}, results_note=note,
        figures=[{"data": _png(f), "caption": c} for f, c in figures], comparison=comp_ctx)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(html, encoding="utf-8")
    log.info("report written to %s", path)
    return path


def _installed() -> bool:
    try:
        version("bayescount")
        return True
    except Exception:
        return False


__all__ = ["write_report", "verdicts"]
