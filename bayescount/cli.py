"""The ``bayescount`` command line: fit, regress, compare, simulate, demo.

Bad input exits with status 2 and a one-line message, never a traceback,
and no output file is written unless the run completed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd

from .errors import InputError

log = logging.getLogger("bayescount")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bayescount", description="Hierarchical Bayesian count models.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fit", help="fit a template to a count matrix and write the LFC table")
    f.add_argument("counts", help="CSV/TSV (gene ids in the first column, one column per sample) or an "
                                  "AnnData .h5ad file (cells x genes; obs is the sample table)")
    f.add_argument("--samples", help="CSV/TSV: sample ids in the first column (required for CSV/TSV counts)")
    f.add_argument("--layer", help=".h5ad: take counts from this layer instead of X")
    f.add_argument("--pseudobulk-by", help=".h5ad: sum cells by DONOR[,CELL_TYPE] obs columns and fit each cell "
                                           "type's pseudobulk samples (adds a cell_type column to the table)")
    f.add_argument("--min-cells", type=int, default=1, help="drop pseudobulk samples with fewer cells (default 1)")
    f.add_argument("--design", required=True, help='design formula, e.g. "~ group"')
    f.add_argument("--model", default="nb_trend", help="template name or spec .toml (default nb_trend)")
    f.add_argument("--method", default="map", choices=["map", "advi", "nuts"])
    g = f.add_mutually_exclusive_group()
    g.add_argument("--contrast", help="factor,level,reference (e.g. group,B,A)")
    g.add_argument("--coef", help="a coefficient name, e.g. 'group[T.B]'")
    f.add_argument("--hdi-prob", type=float, default=0.95)
    f.add_argument("--out", help="write the LFC table here (CSV, or TSV for .tsv); default: print top genes")
    f.add_argument("--save", help="save the fit (ArviZ DataTree) to this netCDF file")
    f.add_argument("--seed", type=int, default=None, help="random seed (recorded in the fit)")
    f.add_argument("--weights", help="sample-table column of observation weights (precision, not class balance)")
    f.add_argument("--dispersion-by", help="sample-table factor whose levels get their own dispersion per gene "
                                           "(each shrunk to the trend; see compare_evidence)")
    f.add_argument("--zero-design", help='zero-inflated/hurdle templates: covariates of the zero probability, '
                                         'e.g. "~ group"')
    f.add_argument("--zero-out", help="with --zero-design: write the per-gene change in the zero log-odds here")
    f.add_argument("--size-factors", default=None, choices=["ratio", "poscounts", "none"],
                   help="default: ratio (poscounts for cell-level .h5ad counts)")
    f.add_argument("--draws", type=int, default=None, help="posterior draws (default: 200 MAP, 1000 NUTS/ADVI)")
    f.add_argument("--nuts-sampler", choices=["nutpie", "pymc", "numpyro", "blackjax"], default=None,
                   help="--method nuts back end (default nutpie when installed; numpyro: JAX, GPUs)")
    f.add_argument("--advi-minibatch", type=int, default=None, metavar="N",
                   help="--method advi on random batches of N samples/cells per step (data too large for full batch)")
    f.add_argument("--log-likelihood", action="store_true", help="store pointwise log-likelihood in --save")
    f.add_argument("--store", help="MAP in gene chunks, each written to this zarr store when done; rerunning "
                                   "the same command resumes from the last finished chunk")
    f.add_argument("--memory", default="4GB", help="with --store: budget for one chunk's arrays (default 4GB)")
    f.add_argument("--chunk-genes", type=int, default=None, help="with --store: genes per chunk (overrides --memory)")
    f.add_argument("--scheduler", default="local", choices=["local", "dask"],
                   help="dask: fit the gene chunks on a Dask cluster (a LocalCluster unless --scheduler-address)")
    f.add_argument("--scheduler-address", help="with --scheduler dask: an existing scheduler, e.g. tcp://host:8786")
    f.add_argument("--workers", type=int, default=2, help="with --scheduler dask and no address: LocalCluster workers")
    f.add_argument("--threads", type=int, default=None, metavar="N",
                   help="MAP path: threads for per-gene work (default: BAYESCOUNT_THREADS, else every CPU)")
    f.add_argument("--quiet", action="store_true", help="no progress bars")
    f.add_argument("--progress-log", action="store_true",
                   help="when not on a terminal, log progress (done/total, ETA) every 10 s instead of staying quiet")

    r = sub.add_parser("regress", help="fit one count response from a tidy table and write its coefficients")
    r.add_argument("data", help="CSV/TSV, one row per observation")
    r.add_argument("--formula", required=True,
                   help='e.g. "art ~ fem + mar + offset(log(exposure))"; zinb/hurdle take "... | 1"')
    r.add_argument("--model", default="nb", choices=["poisson", "nb", "zinb", "hurdle"])
    r.add_argument("--method", default="map", choices=["map", "advi", "nuts"])
    r.add_argument("--hdi-prob", type=float, default=0.95)
    r.add_argument("--out", help="write the coefficient table here (CSV)")
    r.add_argument("--save", help="save the fit (ArviZ DataTree) to this netCDF file")
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--quiet", action="store_true", help="no progress bars")

    c = sub.add_parser("compare", help="compare templates on the same data by per-gene LOO (or WAIC)")
    c.add_argument("data", help="COUNTS (CSV/TSV, with --samples and --design) or a tidy DATA table (with --formula)")
    c.add_argument("--samples", help="CSV/TSV sample table (count matrices)")
    c.add_argument("--design", help='design formula for count matrices, e.g. "~ group"')
    c.add_argument("--formula", help='one response from a tidy table, e.g. "art ~ fem + mar | fem"; '
                                     "poisson/nb ignore the zero part after '|'")
    c.add_argument("--models", required=True, help="comma-separated templates (count matrices: poisson,nb_trend,"
                                                   "zinb_trend,hurdle_trend; tidy: poisson,nb,zinb,hurdle)")
    c.add_argument("--method", default="map", choices=["map", "advi", "nuts"])
    c.add_argument("--ic", default="loo", choices=["loo", "waic"])
    c.add_argument("--size-factors", default="ratio", choices=["ratio", "poscounts", "none"])
    c.add_argument("--memory", default="1GB", help="budget for one gene chunk's log-likelihood (default 1GB)")
    c.add_argument("--draws", type=int, default=None, help="posterior draws (default: 400 MAP, 1000 NUTS/ADVI)")
    c.add_argument("--out", help="write the comparison table here (CSV)")
    c.add_argument("--report", help="write an HTML report of the fits and their comparison here")
    c.add_argument("--seed", type=int, default=None)
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    c.add_argument("--progress-log", action="store_true",
                   help="when not on a terminal, log progress (done/total, ETA) every 10 s instead of staying quiet")

    rp = sub.add_parser("report", help="write a self-contained HTML report of saved fits (compared when several)")
    rp.add_argument("fits", nargs="+", help="fit files saved with --save (netCDF)")
    rp.add_argument("--out", required=True, help="the HTML file to write")
    rp.add_argument("--contrast", help="factor,level,reference for the results table (default: the fit's default)")
    rp.add_argument("--ic", default="loo", choices=["loo", "waic"])
    rp.add_argument("--memory", default="1GB")

    s = sub.add_parser("simulate", help="write simulated counts.csv, samples.csv and truth.csv")
    s.add_argument("--genes", type=int, default=2000)
    s.add_argument("--samples", type=int, default=12, help="total samples, split evenly over groups")
    s.add_argument("--groups", type=int, default=2)
    s.add_argument("--frac-de", type=float, default=0.1)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--out", required=True, help="output folder")

    sb = sub.add_parser("sbc", help="simulation-based calibration of a template and fit path on a design")
    sb.add_argument("samples", help="sample table CSV/TSV (sample ids in the first column)")
    sb.add_argument("--design", required=True, help='design formula, e.g. "~ group" or "~ group + (1|donor)"')
    sb.add_argument("--model", default="nb_trend")
    sb.add_argument("--method", default="map", choices=["map", "advi", "nuts"])
    sb.add_argument("--genes", type=int, default=2000, help="genes drawn from the prior (each one replicate)")
    sb.add_argument("--dispersion-by", help="draw and fit one dispersion per level of this sample-table factor")
    sb.add_argument("--zero-design", help='zero-inflated/hurdle templates: draw and fit zero-part covariates, e.g. "~ group"')
    sb.add_argument("--seed", type=int, default=1)
    sb.add_argument("--out", help="write the per-coordinate summary CSV here")
    sb.add_argument("--ranks", help="write every gene's ranks CSV here")
    sb.add_argument("--plot", help="write rank histograms here (.png, .svg, .pdf)")
    sb.add_argument("--quiet", action="store_true", help="no progress bars")

    d = sub.add_parser("demo", help="Poisson vs nb_trend calibration, then a DE table on simulated data")
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--out", help="optional folder for the demo's DE table")
    return p


def _progress(args):
    """False with --quiet; "log" with --progress-log (log lines off a terminal); else bars on a terminal."""
    if args.quiet:
        return False
    return "log" if getattr(args, "progress_log", False) else True


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("pymc", "pytensor", "numba", "arviz", "nutpie"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return {"fit": cmd_fit, "regress": cmd_regress, "compare": cmd_compare, "report": cmd_report, "simulate": cmd_simulate,
                "sbc": cmd_sbc, "demo": cmd_demo}[args.command](args)
    except InputError as exc:
        msg = str(exc).replace("\n", " ")
        print(f"bayescount: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bayescount: interrupted; no output written", file=sys.stderr)
        return 130


def _check_writable(path: str | None, what: str) -> None:
    if path is None:
        return
    parent = Path(path).expanduser().resolve().parent
    if not parent.is_dir():
        raise InputError(f"folder for {what} {str(parent)!r} does not exist; create it first")


def cmd_fit(args) -> int:
    from ._threads import threads_limit

    if args.threads is None:
        return _cmd_fit(args)
    with threads_limit(args.threads):  # every step's default, the LFC table's summaries included
        return _cmd_fit(args)


def _cmd_fit(args) -> int:
    from .fit import fit
    from .io import atomic_write_csv

    if not 0 < args.hdi_prob < 1:
        raise InputError(f"--hdi-prob must be between 0 and 1, got {args.hdi_prob}")
    _check_writable(args.out, "--out")
    _check_writable(args.save, "--save")
    contrast = None
    if args.contrast:
        parts = [x.strip() for x in args.contrast.split(",")]
        if len(parts) != 3 or not all(parts):
            raise InputError(f"--contrast must be factor,level,reference (e.g. group,B,A), got {args.contrast!r}")
        contrast = parts
    elif args.coef:
        contrast = args.coef
    datasets = _read_fit_input(args)
    if args.scheduler_address and args.scheduler != "dask":
        raise InputError("--scheduler-address needs --scheduler dask")
    if args.store or args.scheduler == "dask":
        return _fit_store(args, datasets, contrast)
    if args.weights:
        datasets = {name: data.with_weights(args.weights) for name, data in datasets.items()}
    if args.dispersion_by:
        datasets = {name: data.with_dispersion_by(args.dispersion_by) for name, data in datasets.items()}
    if args.zero_out and not args.zero_design:
        raise InputError("--zero-out needs --zero-design (the covariates of the zero probability)")
    if args.zero_design:
        datasets = {name: data.with_zero_design(args.zero_design) for name, data in datasets.items()}
    # Resolve the contrast before fitting so a typo costs nothing.
    for data in datasets.values():
        data.design.contrast_vector(contrast, data.samples)
        if args.zero_out:
            data.zero_design.contrast_vector(contrast, data.samples)
    _check_writable(args.zero_out, "--zero-out")
    fits, tables, zero_tables = {}, [], []
    for name, data in datasets.items():
        prefix = f"cell type {name}: " if name is not None else ""
        log.info("%sdata: %d genes x %d samples (%d all-zero genes dropped)", prefix, data.n_genes, data.n_obs,
                 data.n_dropped_zero)
        res = fit(data, model=args.model, method=args.method, random_seed=args.seed, draws=args.draws,
                  log_likelihood=args.log_likelihood, progress=_progress(args), nuts_sampler=args.nuts_sampler,
                  advi_minibatch=args.advi_minibatch)
        table = res.lfc(contrast, hdi_prob=args.hdi_prob)
        log.info("%scontrast %s: %d genes with svalue < 0.05", prefix, table.attrs["contrast"],
                 int((table.svalue < 0.05).sum()))
        if name is not None:
            table.insert(0, "cell_type", name)
        fits[name] = res
        tables.append(table)
        if args.zero_out:
            # The same contrast, resolved against the zero design.
            zt = res.zero_effect(contrast, hdi_prob=args.hdi_prob)
            if name is not None:
                zt.insert(0, "cell_type", name)
            zero_tables.append(zt)
    table = pd.concat(tables, ignore_index=True)
    # Outputs are written only once every fit has finished: no partial set of files.
    if args.save:
        for name, res in fits.items():
            path = args.save if name is None else _per_cell_type(args.save, name)
            res.save(path)
            log.info("fit saved to %s", path)
    if args.zero_out:
        atomic_write_csv(pd.concat(zero_tables, ignore_index=True), args.zero_out, index=False)
        log.info("zero-probability table written to %s", args.zero_out)
    if args.out:
        atomic_write_csv(table, args.out, index=False)
        log.info("LFC table written to %s", args.out)
    else:
        with pd.option_context("display.width", 160, "display.max_columns", 20):
            print(table.sort_values("svalue").head(20).to_string(index=False))
    return 0


def _fit_store(args, datasets, contrast) -> int:
    from .chunked import fit_chunked
    from .io import atomic_write_csv

    if args.method != "map" or args.save or args.pseudobulk_by or args.zero_out:
        raise InputError("--store runs the MAP path on one data set and writes the table (--out); it does not take "
                         "--method advi/nuts, --save, --pseudobulk-by or --zero-out")
    data = datasets[None]
    if args.weights:
        data = data.with_weights(args.weights)
    if args.dispersion_by:
        data = data.with_dispersion_by(args.dispersion_by)
    if args.zero_design:
        data = data.with_zero_design(args.zero_design)
    import contextlib
    import tempfile

    with contextlib.ExitStack() as stack:
        store = args.store or stack.enter_context(tempfile.TemporaryDirectory()) + "/run.zarr"
        client = _dask_client(args, stack) if args.scheduler == "dask" else None
        table = fit_chunked(data, store, model=args.model, contrast=contrast, memory=args.memory,
                            random_seed=0 if args.seed is None else args.seed, hdi_prob=args.hdi_prob,
                            chunk_size=args.chunk_genes, progress=_progress(args), client=client)
    if args.out:
        atomic_write_csv(table, args.out, index=False)
        log.info("LFC table written to %s", args.out)
    else:
        with pd.option_context("display.width", 160, "display.max_columns", 20):
            print(table.sort_values("svalue").head(20).to_string(index=False))
    return 0


def _dask_client(args, stack):
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise InputError("--scheduler dask needs dask.distributed: pip install 'bayescount[dask]'") from None
    if args.scheduler_address:
        try:
            return stack.enter_context(Client(args.scheduler_address, timeout=30))
        except OSError as exc:
            raise InputError(f"cannot reach the Dask scheduler at {args.scheduler_address}: {exc}") from None
    cluster = stack.enter_context(LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                               dashboard_address=None))
    log.info("Dask LocalCluster with %d workers at %s", args.workers, cluster.scheduler_address)
    return stack.enter_context(Client(cluster))


def _read_fit_input(args) -> dict:
    """``{None: CountData}`` for one data set, ``{cell_type: CountData}`` for pseudobulk."""
    from .data import CountData

    is_h5ad = str(args.counts).lower().endswith(".h5ad")
    if not is_h5ad:
        if args.samples is None:
            raise InputError("--samples is required with CSV/TSV counts (an .h5ad file carries its own obs table)")
        if args.layer or args.pseudobulk_by:
            raise InputError("--layer and --pseudobulk-by apply to .h5ad counts only")
        return {None: CountData.from_csv(args.counts, args.samples, design=args.design,
                                         size_factors=args.size_factors or "ratio")}
    from .singlecell import pseudobulk, read_cells

    if args.samples is not None:
        raise InputError("--samples is not used with .h5ad counts: the file's obs table is the sample table")
    if not args.pseudobulk_by:
        return {None: read_cells(args.counts, design=args.design, layer=args.layer,
                                 size_factors=args.size_factors or "poscounts")}
    keys = [k.strip() for k in args.pseudobulk_by.split(",")]
    if len(keys) not in (1, 2) or not all(keys):
        raise InputError(f"--pseudobulk-by must be DONOR or DONOR,CELL_TYPE, got {args.pseudobulk_by!r}")
    out = pseudobulk(args.counts, donor=keys[0], cell_type=keys[1] if len(keys) == 2 else None,
                     design=args.design, layer=args.layer, size_factors=args.size_factors or "ratio",
                     min_cells=args.min_cells)
    return out if len(keys) == 2 else {None: out["all"]}


def _per_cell_type(path: str, name: str) -> str:
    p = Path(path)
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
    return str(p.with_name(f"{p.stem}.{safe}{p.suffix}"))


def cmd_regress(args) -> int:
    from .data import read_table
    from .io import atomic_write_csv
    from .regress import regress

    if not 0 < args.hdi_prob < 1:
        raise InputError(f"--hdi-prob must be between 0 and 1, got {args.hdi_prob}")
    _check_writable(args.out, "--out")
    _check_writable(args.save, "--save")
    frame = read_table(args.data, "DATA", index=False)
    res, table = regress(frame, args.formula, model=args.model, method=args.method, random_seed=args.seed,
                         hdi_prob=args.hdi_prob, progress=_progress(args))
    where = "at the MAP" if args.method == "map" else "at the posterior mean"
    print(f"log-likelihood {where}: {table.attrs.get('loglik', float('nan')):.4f}; parameters: {len(table)}")
    if args.save:
        res.save(args.save)
    if args.out:
        atomic_write_csv(table, args.out, index=False)
        log.info("coefficients written to %s", args.out)
    else:
        with pd.option_context("display.width", 160):
            print(table.to_string(index=False))
    return 0


def cmd_compare(args) -> int:
    from .compare import compare
    from .io import atomic_write_csv

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if len(models) < 2 or len(set(models)) != len(models):
        raise InputError(f"--models needs two or more different templates, got {args.models!r}")
    if (args.formula is None) == (args.design is None):
        raise InputError("give --design (with --samples) for a count matrix, or --formula for a tidy table")
    _check_writable(args.out, "--out")
    _check_writable(args.report, "--report")
    draws = args.draws or (400 if args.method == "map" else None)
    fits = {}
    if args.formula is not None:
        from .data import read_table
        from .regress import TIDY_TEMPLATES, regress

        unknown = [m for m in models if m not in TIDY_TEMPLATES]
        if unknown:
            raise InputError(f"unknown tidy model(s) {unknown}; use {sorted(TIDY_TEMPLATES)}")
        frame = read_table(args.data, "DATA", index=False)
        for m in models:
            formula = args.formula if m in ("zinb", "hurdle") else _count_part(args.formula)
            fits[m], _ = regress(frame, formula, model=m, method=args.method, random_seed=args.seed, draws=draws,
                                 progress=_progress(args))
    else:
        from .data import CountData
        from .fit import fit
        from .spec import list_templates

        unknown = [m for m in models if m not in list_templates() and not m.endswith(".toml")]
        if unknown:
            raise InputError(f"unknown template(s) {unknown}; available: {list_templates()}")
        if args.samples is None:
            raise InputError("--samples is required with --design")
        data = CountData.from_csv(args.data, args.samples, design=args.design, size_factors=args.size_factors)
        for m in models:
            log.info("fitting %s (%s)", m, args.method)
            fits[m] = fit(data, model=m, method=args.method, random_seed=args.seed, draws=draws,
                          progress=_progress(args))
    genes, overall = compare(fits, ic=args.ic, memory=args.memory, progress=_progress(args))
    if args.formula is not None:
        table = overall.rename(columns={"p": f"p_{args.ic}"})
    else:
        table = genes
        for m in models:
            log.info("%s preferred by %d genes", m, int((genes.preferred == m).sum()))
    with pd.option_context("display.width", 160):
        print(overall.to_string(index=False))
    if args.report:
        from .report import write_report

        write_report(fits, args.report, comparison=(genes, overall))
    if args.out:
        atomic_write_csv(table, args.out, index=False)
        log.info("comparison written to %s", args.out)
    return 0


def cmd_report(args) -> int:
    from .report import write_report
    from .result import Fit

    _check_writable(args.out, "--out")
    fits = {}
    for path in args.fits:
        res = Fit.load(path)
        name = Path(path).stem
        fits[name if name not in fits else f"{name}_{len(fits)}"] = res
    contrast = [x.strip() for x in args.contrast.split(",")] if args.contrast else None
    write_report(fits, args.out, contrast=contrast, ic=args.ic, memory=args.memory)
    return 0


def _count_part(formula: str) -> str:
    """The formula without a zero part after a top-level '|'."""
    depth = 0
    for i, ch in enumerate(formula):
        depth += (ch == "(") - (ch == ")")
        if ch == "|" and depth == 0:
            return formula[:i].strip()
    return formula


def cmd_simulate(args) -> int:
    from .simulate import simulate

    if args.genes < 1 or args.groups < 2 or args.samples < 2 * args.groups:
        raise InputError("need --genes >= 1, --groups >= 2 and at least 2 samples per group")
    if args.samples % args.groups:
        raise InputError(f"--samples {args.samples} does not split evenly into {args.groups} groups")
    if not 0 <= args.frac_de <= 1:
        raise InputError("--frac-de must be between 0 and 1")
    sim = simulate(n_genes=args.genes, n_per_group=args.samples // args.groups, n_groups=args.groups,
                   frac_de=args.frac_de, random_seed=args.seed)
    paths = sim.write(args.out)
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return 0


def cmd_sbc(args) -> int:
    from .data import read_table
    from .io import atomic_write_csv
    from .plots import plot_sbc
    from .sbc import sbc

    if args.genes < 10:
        raise InputError(f"--genes must be at least 10 (each gene is one replicate), got {args.genes}")
    for path, what in ((args.out, "--out"), (args.ranks, "--ranks"), (args.plot, "--plot")):
        _check_writable(path, what)
    samples = read_table(args.samples, "samples")
    options = {k: v for k, v in (("dispersion_by", args.dispersion_by), ("zero_design", args.zero_design)) if v}
    summary, ranks = sbc(args.model, samples, args.design, n_genes=args.genes, method=args.method,
                         random_seed=args.seed, progress=_progress(args), **options)
    print(summary.round(4).to_string(index=False))
    if args.out:
        atomic_write_csv(summary, args.out, index=False)
    if args.ranks:
        atomic_write_csv(ranks, args.ranks, index=False)
    if args.plot:
        plot_sbc(ranks).savefig(args.plot)
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(seed=args.seed, out=args.out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
