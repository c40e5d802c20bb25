"""Benchmark bayescount's MAP path against PyDESeq2 on simulated RNA-seq counts.

Both tools get the same simulated data (``bayescount.simulate``: negative
binomial counts with a DESeq2-like dispersion trend, 10% DE genes, two
groups) and are timed from "counts in" to "log2 fold-change table out":

* **bayescount** -- ``CountData.from_pandas`` + ``bc.fit(model="nb_trend",
  method="map")`` + ``res.lfc(["group", "B", "A"])``. Run ``1 + --repeat``
  times in the same process: the first call pays the pytensor/numba
  compilation (the on-disk pytensor/numba caches may already be warm from
  earlier runs, so it is a "cold-ish" first call); the warm time is the
  median of the others. ``--threads`` sets bayescount's threads (default every CPU). The fit's own
  ``res.attrs["timings"]`` (compile vs solve split) is printed too. The 200
  Laplace draws are made on first access to ``res.idata``, which the table
  does not need; their time is printed on its own (after the timed calls).
* **PyDESeq2** -- ``DeseqDataSet(...)``, ``.deseq2()``, ``DeseqStats(...)``,
  ``.summary()`` with ``DefaultInference(n_cpus=2)`` (Wald test, unshrunk
  MLE log2 fold changes).
* **edgeR** (quasi-likelihood pipeline) and **DESeq2** in R, where ``Rscript``
  and the packages are installed (``benchmarks/r_peers.py`` says how): the time
  inside R from the count matrix to the table, and the whole ``Rscript``
  process's time beside it. ``--peers`` picks the peers (default: every one
  that is installed).

Memory: each tool runs in its own freshly *spawned* child process; the table
reports that child's ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (peak
resident set size, whole process incl. interpreter and imports) and the delta
of that high-water mark over the timed region. PyDESeq2's joblib/loky worker
processes are not part of its child's own RSS; the largest worker's peak
(``RUSAGE_CHILDREN`` after shutting the workers down) is reported separately.
Imports happen before the timed region for both tools.

Accuracy vs the simulation truth: genes are called at ``svalue < 0.1``
(bayescount), ``padj < 0.1`` (bayescount's Wald ``padj`` and PyDESeq2's
``padj``). A true positive is a call on an ``is_de`` gene with the
correct sign; FDR = false calls / calls, power = true positives / all
``is_de`` genes. ``power_at_FDR_0.1`` ranks genes by each rule's statistic and
cuts the list where the realized FDR last is <= 0.1: the power of the ranking
itself, with every tool held to the same false-discovery proportion. LFC RMSE vs ``true_log2fc`` is over genes with finite
estimates from every tool run, and over the subset with
``true_base_mean >= 10``.

A short sha256 of ``bayescount/*.py`` + ``models/*.toml`` is printed (and
re-checked at the end) so that every table can be tied to the code it measured.

Usage
-----
::

    PYTHONPATH=. python benchmarks/bench_map_vs_pydeseq2.py [--genes 20000]
        [--per-group 6] [--seed 1] [--peers pydeseq2,edger,deseq2] [--skip-peer]
        [--out results.md|results.csv]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import time
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import pandas as pd

THRESH = 0.1


def _maxrss_mib(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # Linux: KiB


def _ours(counts: pd.DataFrame, samples: pd.DataFrame, seed: int, repeat: int = 3, threads=None) -> dict:
    import bayescount as bc
    from bayescount.data import CountData

    out = {"rss_start": _maxrss_mib(), "times_warm": []}
    for i in range(1 + max(repeat, 1)):
        label = "first" if i == 0 else "warm"
        t0 = time.perf_counter()
        data = CountData.from_pandas(counts, samples, "~ group")
        res = bc.fit(data, model="nb_trend", method="map", random_seed=seed, n_threads=threads)
        table = res.lfc(["group", "B", "A"])
        elapsed = time.perf_counter() - t0
        if i:
            out["times_warm"].append(elapsed)
        else:
            out["time_first"] = elapsed
        out[f"timings_{label}"] = json.loads(res.attrs["timings"])
        if i <= 1:
            # The high-water mark through the first warm call: later calls add the
            # allocator's fragmentation, not the fit's working set.
            out[f"rss_{label}"] = _maxrss_mib()
        out[f"table_{label}"] = table.set_index("gene")
        if i == max(repeat, 1):
            # The posterior draws are made on first access to idata, which the table does not
            # need: made here, after the timed region and the memory readings, to report their cost.
            t0 = time.perf_counter()
            res.idata
            out["time_draws"] = time.perf_counter() - t0
        del data, res, table  # a warm call's peak should not include the call before it
    out["time_warm"] = float(np.median(out["times_warm"]))
    return out


def _peer(counts: pd.DataFrame, samples: pd.DataFrame, seed: int) -> dict:
    from joblib.externals.loky import get_reusable_executor
    from pydeseq2.dds import DeseqDataSet
    from pydeseq2.default_inference import DefaultInference
    from pydeseq2.ds import DeseqStats

    out = {"rss_start": _maxrss_mib()}
    t0 = time.perf_counter()
    inference = DefaultInference(n_cpus=2)
    dds = DeseqDataSet(counts=counts.T, metadata=samples, design="~group", inference=inference, quiet=True)
    dds.deseq2()
    stats = DeseqStats(dds, contrast=["group", "B", "A"], inference=inference, quiet=True)
    stats.summary()
    out["time_first"] = time.perf_counter() - t0
    out["rss_first"] = _maxrss_mib()
    out["table_first"] = stats.results_df.copy()
    get_reusable_executor().shutdown(wait=True)
    out["rss_workers"] = _maxrss_mib(resource.RUSAGE_CHILDREN)
    return out


def _child(fn, queue, *args) -> None:
    try:
        queue.put(fn(*args))
    except BaseException as exc:  # report, do not hang the parent
        queue.put({"error": repr(exc)})
        raise


def run_isolated(fn, *args) -> dict:
    """Run ``fn(*args)`` in a fresh spawned process and return its result dict."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, queue, *args))
    proc.start()
    result = queue.get()
    proc.join()
    if "error" in result:
        raise RuntimeError(f"{fn.__name__} failed in the child process: {result['error']}")
    return result


def calls(lfc: pd.Series, stat: pd.Series, truth: pd.DataFrame) -> dict:
    """FDR and power of the calls ``stat < THRESH`` (NaN stat = no call)."""
    called = stat.reindex(truth.index).lt(THRESH).to_numpy()
    sign_ok = np.sign(lfc.reindex(truth.index).to_numpy()) == np.sign(truth["true_log2fc"].to_numpy())
    tp = int((called & truth["is_de"].to_numpy() & sign_ok).sum())
    n = int(called.sum())
    return {"calls": n, "TP": tp, "FDR": (n - tp) / n if n else np.nan, "power": tp / int(truth["is_de"].sum())}


def power_at_fdr(lfc: pd.Series, stat: pd.Series, truth: pd.DataFrame, target: float = THRESH) -> float:
    """Power of the longest top list (genes ranked by ``stat``) whose realized FDR is <= ``target``.

    Compares rankings, not thresholds: a tool whose ``padj < 0.1`` overshoots its
    nominal FDR buys power with false calls; cut every tool where its own calls
    reach the same realized FDR and the power left is what its ranking is worth.
    """
    s = stat.reindex(truth.index).to_numpy(dtype=float)
    ok = (truth["is_de"].to_numpy()
          & (np.sign(lfc.reindex(truth.index).to_numpy()) == np.sign(truth["true_log2fc"].to_numpy())))
    order = np.argsort(np.where(np.isnan(s), np.inf, s), kind="stable")[: int(np.isfinite(s).sum())]
    tp = np.cumsum(ok[order])
    fdr = 1.0 - tp / np.arange(1, order.size + 1)
    good = np.flatnonzero(fdr <= target)
    return float(tp[good[-1]] / int(truth["is_de"].sum())) if good.size else 0.0


def rmse(lfc: pd.Series, truth: pd.DataFrame, genes: pd.Index) -> float:
    return float(np.sqrt(np.mean((lfc.reindex(genes) - truth.loc[genes, "true_log2fc"]) ** 2)))


def versions() -> str:
    pkgs = ["pymc", "pytensor", "arviz", "numpy", "pandas", "xarray", "scipy", "numba", "formulaic",
            "pydeseq2", "anndata", "scikit-learn"]
    out = [f"python {platform.python_version()}"]
    for p in pkgs:
        try:
            out.append(f"{p} {version(p)}")
        except PackageNotFoundError:
            out.append(f"{p} (not installed)")
    return ", ".join(out)


def source_hash() -> str:
    """Short sha256 of the bayescount sources and model templates (ties a table to the code)."""
    import hashlib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for f in sorted([*root.glob("bayescount/*.py"), *root.glob("models/*.toml")]):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:12]


def to_markdown(df: pd.DataFrame) -> str:
    cells = [[str(c) for c in df.columns]] + [[_fmt(v) for v in row] for row in df.itertuples(index=False)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells[1:]])


def _fmt(v) -> str:
    if isinstance(v, float):
        return "-" if np.isnan(v) else f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--genes", type=int, default=20000)
    ap.add_argument("--per-group", type=int, default=6)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip-peer", action="store_true", help="run bayescount only")
    ap.add_argument("--peers", default="pydeseq2,edger,deseq2",
                    help="comma-separated peers (R peers run only where installed; default %(default)s)")
    ap.add_argument("--repeat", type=int, default=3, help="warm bayescount calls (their median is reported)")
    ap.add_argument("--threads", type=int, default=None, help="bayescount threads (default every CPU)")
    ap.add_argument("--out", help="write the tables to this path (.csv, otherwise markdown)")
    args = ap.parse_args(argv)

    import bayescount as bc

    sim = bc.simulate(n_genes=args.genes, n_per_group=args.per_group, random_seed=args.seed)
    truth = sim.truth
    print(f"data: {args.genes} genes x {2 * args.per_group} samples, {int(truth.is_de.sum())} DE, seed {args.seed}")
    print(versions())
    src = source_hash()
    print(f"bayescount source hash: {src}")

    wanted = set() if args.skip_peer else {p.strip().lower() for p in args.peers.split(",") if p.strip()}
    r_wanted = [p for p in ("edger", "deseq2") if p in wanted]
    import r_peers

    if r_wanted:
        print(r_peers.versions())
    missing = [p for p in r_wanted if not r_peers.available(p)]
    if missing:
        print(f"R peers not installed, skipped: {', '.join(missing)} (see benchmarks/r_peers.py)")
    ours = run_isolated(_ours, sim.counts, sim.samples, args.seed, args.repeat, args.threads)
    peer = run_isolated(_peer, sim.counts, sim.samples, args.seed) if "pydeseq2" in wanted else None
    rpeers = {p: r_peers.run(p, sim.counts, sim.samples) for p in r_wanted if p not in missing}
    for k in ("first", "warm"):
        print(f"bayescount {k} call: {ours[f'time_{k}']:.2f} s; fit timings {ours[f'timings_{k}']}")
    print("bayescount warm calls: " + ", ".join(f"{t:.2f}" for t in ours["times_warm"]) + " s (median above)")
    print(f"bayescount posterior draws (made on first access to res.idata, not timed above): {ours['time_draws']:.2f} s")
    ta, tb = ours["table_first"], ours["table_warm"]
    same = np.allclose(ta["log2fc"], tb["log2fc"], equal_nan=True) and np.allclose(ta["svalue"], tb["svalue"], equal_nan=True)
    print(f"first and warm bayescount tables identical: {same}")

    # ---- performance table
    perf = [{"tool": "bayescount MAP (first call)", "wall_s": ours["time_first"], "peak_rss_MiB": ours["rss_first"],
             "rss_growth_MiB": ours["rss_first"] - ours["rss_start"]},
            {"tool": "bayescount MAP (warm, median)", "wall_s": ours["time_warm"], "peak_rss_MiB": ours["rss_warm"],
             "rss_growth_MiB": ours["rss_warm"] - ours["rss_start"]}]
    if peer:
        perf.append({"tool": "pydeseq2 (n_cpus=2)", "wall_s": peer["time_first"], "peak_rss_MiB": peer["rss_first"],
                     "rss_growth_MiB": peer["rss_first"] - peer["rss_start"],
                     "worker_peak_rss_MiB": peer["rss_workers"]})
    names = {"edger": "edgeR QL (R)", "deseq2": "DESeq2 (R)"}
    for p, r in rpeers.items():
        perf.append({"tool": names[p], "wall_s": r["time"], "peak_rss_MiB": r["peak_rss_MiB"],
                     "process_s": r["time_process"]})
    perf = pd.DataFrame(perf)
    if peer:
        perf["pydeseq2_time_over_this"] = (peer["time_first"] / perf["wall_s"]).where(perf.index < 2)
    for p, r in rpeers.items():
        perf[f"{p}_time_over_this"] = (r["time"] / perf["wall_s"]).where(perf.index < 2)

    # ---- accuracy table
    truth_ok = truth[truth.index.isin(ta.index)]
    finite = ta.index[np.isfinite(ta["log2fc"])]
    if peer:
        pt = peer["table_first"]
        finite = finite.intersection(pt.index[np.isfinite(pt["log2FoldChange"])])
    # edgeR filters genes (filterByExpr): its LFC RMSE is over the genes it kept, its
    # calls and power over all genes (a filtered gene is not called).
    finite_r = {p: finite.intersection(r["table"].index[np.isfinite(r["table"]["log2fc"])]) for p, r in rpeers.items()}
    hi = finite[truth.loc[finite, "true_base_mean"].to_numpy() >= 10]
    rows = [("bayescount", "svalue < 0.1", tb["log2fc"], tb["svalue"]),
            ("bayescount", "padj < 0.1", tb["log2fc"], tb["padj"])]
    if peer:
        rows.append(("pydeseq2", "padj < 0.1", pt["log2FoldChange"], pt["padj"]))
    rows += [(names[p], "padj < 0.1", r["table"]["log2fc"], r["table"]["padj"]) for p, r in rpeers.items()]
    genes_of = {names[p]: g for p, g in finite_r.items()}
    acc = pd.DataFrame([{"tool": t, "rule": r, **calls(lfc, stat, truth),
                         f"power_at_FDR_{THRESH}": power_at_fdr(lfc, stat, truth),
                         "RMSE_all": rmse(lfc, truth, genes_of.get(t, finite)),
                         "RMSE_mean>=10": rmse(lfc, truth, genes_of.get(t, finite).intersection(hi)),
                         "n_rmse": len(genes_of.get(t, finite))} for t, r, lfc, stat in rows])
    print(f"({len(truth) - len(truth_ok)} all-zero genes dropped by CountData; power counts all {int(truth.is_de.sum())} DE genes)")
    if source_hash() != src:
        print("WARNING: bayescount sources changed while the benchmark ran; results mix code versions")
    text = f"## Speed and memory\n\n{to_markdown(perf)}\n\n## Accuracy vs truth\n\n{to_markdown(acc)}\n"
    print("\n" + text)
    if args.out:
        if args.out.endswith(".csv"):
            pd.concat([perf.assign(table="performance"), acc.assign(table="accuracy")]).to_csv(args.out, index=False)
        else:
            with open(args.out, "w") as fh:
                fh.write(text)


if __name__ == "__main__":
    main()
