"""The benchmark suite in one command: every size, ours against the peer in the same run.

For each case the data are simulated with known truth, then each tool runs in
its own freshly spawned process (so peak memory is its own) and is scored
against the truth, so speed is never reported without accuracy:

* ``bulk GxN``: ``nb_trend`` MAP vs PyDESeq2 (``~ group``, 2 cores), counts in
  -> LFC table out. Calls: our ``svalue < 0.1``; PyDESeq2 ``padj < 0.1``.
  Our time is the median of three warm calls (fits after the first in the
  process); the first call, which loads compiled kernels, is shown too.
  Where R is installed (``benchmarks/r_peers.py``), edgeR's QL pipeline and
  DESeq2 run on the same data too (time inside R, counts to table; ``padj < 0.1``).
* ``donor GxC``: ``nb_donor`` MAP (``~ condition + (1|donor)``) vs a per-gene
  loop of statsmodels' ``PoissonBayesMixedGLM`` (the GLMM statsmodels has),
  4 vs 4 donors, 20% DE genes, and where R is installed a per-gene loop of
  ``glmmTMB`` (NB GLMM, ``(1 | donor)``). Calls: our ``svalue < 0.1``; the
  loops' Benjamini-Hochberg ``padj < 0.1`` (Wald). The loops are timed on
  ``--reference-genes`` genes and scaled to all (marked in the table).

``peer_over_ours`` on a peer's row is its time over ours in the same case.

A call is a true positive when the gene is DE and the sign is right;
FDR = false calls / calls, power = true positives / DE genes; power_at_FDR is
the power of each tool's ranking cut where its realized FDR last is <= 0.1 (0 if never).

Run from the repository root (about 4 minutes on 2 cores)::

    PYTHONPATH=. python benchmarks/suite.py
    PYTHONPATH=. python benchmarks/suite.py --cases bulk:2000x12 donor:60x2000 --out suite.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_map_vs_pydeseq2 import (_maxrss_mib, _ours, _peer, power_at_fdr, run_isolated, source_hash,  # noqa: E402
                                   to_markdown, versions)
from bench_nb_donor_vs_glmm import statsmodels_loop  # noqa: E402
import r_peers  # noqa: E402

THRESH = 0.1
DEFAULT_CASES = ["bulk:2000x12", "bulk:20000x12", "bulk:20000x48", "donor:100x2000"]


def _score(lfc: np.ndarray, called: np.ndarray, truth: pd.DataFrame) -> dict:
    de = truth["is_de"].to_numpy()
    ok = called & de & (np.sign(lfc) == np.sign(truth["true_log2fc"].to_numpy()))
    n = int(called.sum())
    return {"calls": n, "FDR": (n - int(ok.sum())) / n if n else np.nan, "power": ok.sum() / max(int(de.sum()), 1)}


def _bulk(genes: int, n_obs: int, seed: int) -> list[dict]:
    import bayescount as bc

    sim = bc.simulate(n_genes=genes, n_per_group=n_obs // 2, random_seed=seed)
    truth = sim.truth
    ours = run_isolated(_ours, sim.counts, sim.samples, seed)
    peer = run_isolated(_peer, sim.counts, sim.samples, seed)
    t, p = ours["table_warm"].reindex(truth.index), peer["table_first"].reindex(truth.index)
    return [{"case": f"bulk {genes}x{n_obs}", "tool": "bayescount nb_trend MAP", "seconds": ours["time_warm"],
             "first_call_s": ours["time_first"], "peak_rss_MiB": ours["rss_warm"],
             **_score(t["log2fc"].to_numpy(), t["svalue"].lt(THRESH).to_numpy(), truth),
             "power_at_FDR": power_at_fdr(t["log2fc"], t["svalue"], truth)},
            {"case": f"bulk {genes}x{n_obs}", "tool": "pydeseq2 (2 cpus)", "seconds": peer["time_first"],
             "peak_rss_MiB": peer["rss_first"] + 2 * peer["rss_workers"],
             **_score(p["log2FoldChange"].to_numpy(), p["padj"].lt(THRESH).to_numpy(), truth),
             "power_at_FDR": power_at_fdr(p["log2FoldChange"], p["padj"], truth)},
            *_r_rows(f"bulk {genes}x{n_obs}", sim.counts, sim.samples, truth)]


def _r_rows(case: str, counts, samples, truth) -> list[dict]:
    rows = []
    for peer, name in (("edger", "edgeR QL (R)"), ("deseq2", "DESeq2 (R)")):
        if not r_peers.available(peer):
            continue
        r = r_peers.run(peer, counts, samples)
        t = r["table"].reindex(truth.index)
        rows.append({"case": case, "tool": name, "seconds": r["time"], "peak_rss_MiB": r["peak_rss_MiB"],
                     **_score(t["log2fc"].to_numpy(), t["padj"].lt(THRESH).to_numpy(), truth),
                     "power_at_FDR": power_at_fdr(t["log2fc"], t["padj"], truth)})
    return rows


def _donor_ours(counts, samples, seed, repeat: int = 3) -> dict:
    import bayescount as bc

    out, warm = {}, []
    for i in range(1 + repeat):
        t0 = time.perf_counter()
        data = bc.CountData.from_pandas(counts, samples, "~ condition + (1|donor)", size_factors="poscounts")
        res = bc.fit(data, model="nb_donor", method="map", random_seed=seed)
        table = res.lfc(["condition", "B", "A"])
        if i:
            warm.append(time.perf_counter() - t0)
        else:
            out["time_first"] = time.perf_counter() - t0
    out["time_warm"] = float(np.median(warm))
    out["rss"] = _maxrss_mib()
    out["table"] = table.set_index("gene")
    out["size_factors"] = data.size_factors
    return out


def _donor_peer(counts, samples, genes) -> dict:
    from scipy import stats
    from statsmodels.stats.multitest import multipletests

    t0 = time.perf_counter()
    lfc, z = statsmodels_loop(counts, samples, genes)
    seconds = time.perf_counter() - t0
    padj = multipletests(2 * stats.norm.sf(np.abs(z)), method="fdr_bh")[1]
    return {"time": seconds, "rss": _maxrss_mib(), "table": pd.DataFrame({"log2fc": lfc, "padj": padj}, index=genes)}


def _donor(genes: int, cells: int, seed: int, reference_genes: int) -> list[dict]:
    import bayescount as bc

    sim = bc.simulate_cells(n_genes=genes, n_donors_per_group=4, cells_per_donor=cells // 8, donor_sd=0.3,
                            frac_de=0.2, random_seed=seed)
    truth = sim.truth
    ours = run_isolated(_donor_ours, sim.counts, sim.samples, seed)
    n_ref = min(reference_genes, genes)
    ref_genes = list(truth.index[:n_ref])
    peer = run_isolated(_donor_peer, sim.counts, sim.samples, ref_genes)
    t = ours["table"].reindex(truth.index)
    p, tr = peer["table"], truth.loc[ref_genes]
    scaled = "" if n_ref == genes else f" (timed on {n_ref} genes, scaled)"
    return [{"case": f"donor {genes}x{cells}", "tool": "bayescount nb_donor MAP", "seconds": ours["time_warm"],
             "first_call_s": ours["time_first"], "peak_rss_MiB": ours["rss"],
             **_score(t["log2fc"].to_numpy(), t["svalue"].lt(THRESH).to_numpy(), truth),
             "power_at_FDR": power_at_fdr(t["log2fc"], t["svalue"], truth)},
            {"case": f"donor {genes}x{cells}", "tool": "statsmodels GLMM loop" + scaled,
             "seconds": peer["time"] * genes / n_ref, "peak_rss_MiB": peer["rss"],
             **_score(p["log2fc"].to_numpy(), p["padj"].lt(THRESH).to_numpy(), tr),
             "power_at_FDR": power_at_fdr(p["log2fc"], p["padj"], tr)},
            *_glmmtmb_rows(f"donor {genes}x{cells}", sim, ref_genes, ours["size_factors"], genes)]


def _glmmtmb_rows(case: str, sim, ref_genes: list, size_factors, genes: int) -> list[dict]:
    if not r_peers.available("glmmtmb"):
        return []
    r = r_peers.glmmtmb_loop(sim.counts.loc[ref_genes], sim.samples, size_factors)
    t, tr = r["table"], sim.truth.loc[ref_genes]
    scaled = "" if len(ref_genes) == genes else f" (timed on {len(ref_genes)} genes, scaled)"
    return [{"case": case, "tool": "glmmTMB loop (R)" + scaled, "seconds": r["time"] * genes / len(ref_genes),
             "peak_rss_MiB": r["peak_rss_MiB"],
             **_score(t["log2fc"].to_numpy(), t["padj"].lt(THRESH).to_numpy(), tr),
             "power_at_FDR": power_at_fdr(t["log2fc"], t["padj"], tr)}]


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", nargs="+", default=DEFAULT_CASES,
                    help="bulk:GENESxSAMPLES and donor:GENESxCELLS (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--reference-genes", type=int, default=20, help="genes in the GLMM loop (time scaled)")
    ap.add_argument("--out", help="also write the table here (.csv, otherwise markdown)")
    args = ap.parse_args(argv)
    print(versions())
    print(r_peers.versions())
    src = source_hash()
    print(f"bayescount source hash: {src}")
    rows = []
    for case in args.cases:
        kind, _, size = case.partition(":")
        a, b = (int(v) for v in size.lower().split("x"))
        t0 = time.perf_counter()
        if kind == "bulk":
            rows += _bulk(a, b, args.seed)
        elif kind == "donor":
            rows += _donor(a, b, args.seed, args.reference_genes)
        else:
            ap.error(f"unknown case kind {kind!r} in {case!r}: use bulk:GxN or donor:GxC")
        print(f"{case}: done in {time.perf_counter() - t0:.0f} s", flush=True)
    table = pd.DataFrame(rows)
    # Each peer's time over ours (our row comes first in each case).
    ours_s = table.groupby("case", sort=False)["seconds"].transform("first")
    table["peer_over_ours"] = np.where(table["tool"].str.startswith("bayescount"), np.nan, table["seconds"] / ours_s)
    table = table[["case", "tool", "seconds", "first_call_s", "peer_over_ours", "peak_rss_MiB",
                   "calls", "FDR", "power", "power_at_FDR"]]
    if source_hash() != src:
        print("WARNING: bayescount sources changed while the suite ran; results mix code versions")
    text = to_markdown(table)
    print("\n" + text)
    if args.out:
        if args.out.endswith(".csv"):
            table.to_csv(args.out, index=False)
        else:
            Path(args.out).write_text(text + "\n")
    return table


if __name__ == "__main__":
    main()
