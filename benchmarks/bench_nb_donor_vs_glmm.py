"""nb_donor MAP vs a per-gene GLMM loop on cell-level data with donor effects.

Simulates G genes x (4 vs 4 donors x 250 cells) with donor effects (sd 0.3) and
no condition effect, then fits

* bayescount ``nb_donor`` on the MAP path (all genes at once; first call includes
  compilation, then ``--repeat`` warm calls, whose median is the warm time; on
  ``--threads`` threads, default every CPU), and
* a per-gene loop of statsmodels' ``PoissonBayesMixedGLM`` (``condition`` fixed,
  ``donor`` random intercept; variational Bayes), the GLMM statsmodels has, and
* where R and glmmTMB are installed (``benchmarks/r_peers.py``), the issue's
  reference: a per-gene loop of ``glmmTMB(y ~ condition + (1 | donor) +
  offset(log sf), family = nbinom2)``, timed inside R (the loop alone).

Prints wall times, their ratios, peak RSS of this process, and the null call
rates (bayescount ``svalue < 0.05``; statsmodels ``|mean / sd| > 1.96``;
glmmTMB Wald ``p < 0.05``).

Run: ``PYTHONPATH=. python benchmarks/bench_nb_donor_vs_glmm.py --genes 100``
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import bayescount as bc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import r_peers  # noqa: E402


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def statsmodels_loop(counts, samples, genes):
    """Per-gene statsmodels ``PoissonBayesMixedGLM`` fits: (log2 fold change, z = mean / sd) arrays."""
    from statsmodels.genmod.bayes_mixed_glm import PoissonBayesMixedGLM

    frame = samples.copy()
    lib = counts.sum(axis=0).to_numpy(dtype=float)
    frame["log_lib"] = np.log(lib / np.median(lib))
    lfc, z = [], []
    for g in genes:
        frame["y"] = counts.loc[g].to_numpy()
        model = PoissonBayesMixedGLM.from_formula("y ~ condition + log_lib", {"donor": "0 + C(donor)"}, frame)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = model.fit_vb()
        k = list(model.exog_names).index("condition[T.B]")
        lfc.append(res.fe_mean[k] / np.log(2))
        z.append(res.fe_mean[k] / res.fe_sd[k])
    return np.array(lfc), np.array(z)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--genes", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5, help="warm calls (their median is reported)")
    ap.add_argument("--threads", type=int, default=None, help="bayescount threads (default every CPU)")
    ap.add_argument("--reference-genes", type=int, default=None,
                    help="genes in the statsmodels loop (default all); its time is scaled to all genes")
    ap.add_argument("--glmmtmb-genes", type=int, default=None,
                    help="genes in the glmmTMB loop (default all); its time is scaled to all genes")
    args = ap.parse_args()
    sim = bc.simulate_cells(n_genes=args.genes, n_donors_per_group=4, cells_per_donor=250, donor_sd=0.3,
                            random_seed=args.seed)
    data = bc.CountData.from_pandas(sim.counts, sim.samples, "~ condition + (1|donor)", size_factors="poscounts")
    print(f"data: {data.n_genes} genes x {data.n_obs} cells, 8 donors, no condition effect")

    t0 = time.perf_counter()
    res = bc.fit(data, model="nb_donor", method="map", random_seed=1, n_threads=args.threads)
    first = time.perf_counter() - t0
    warms = []
    for _ in range(max(args.repeat, 1)):
        t0 = time.perf_counter()
        res = bc.fit(data, model="nb_donor", method="map", random_seed=1, n_threads=args.threads)
        warms.append(time.perf_counter() - t0)
    warm = float(np.median(warms))
    print(f"bayescount warm calls ({json.loads(res.attrs['timings'])['n_threads']} threads): "
          + ", ".join(f"{t:.2f}" for t in warms) + " s")
    ours = res.lfc(["condition", "B", "A"])
    rss_ours = peak_rss_mib()

    n_ref = args.reference_genes or data.n_genes
    genes = list(data.genes[:n_ref])
    t0 = time.perf_counter()
    ref_calls = np.abs(statsmodels_loop(sim.counts, sim.samples, genes)[1]) > 1.96
    ref = (time.perf_counter() - t0) * data.n_genes / n_ref

    tmb = None
    if r_peers.available("glmmtmb"):
        print(r_peers.versions())
        n_tmb = args.glmmtmb_genes or data.n_genes
        run = r_peers.glmmtmb_loop(sim.counts.loc[list(data.genes[:n_tmb])], sim.samples, data.size_factors)
        tmb = (run["time"] * data.n_genes / n_tmb, (run["table"]["pvalue"] < 0.05).mean(), n_tmb)
    else:
        print("glmmTMB not installed: its loop is skipped (see benchmarks/r_peers.py)")

    print(f"{'':28s}{'seconds':>10s}{'null calls':>12s}")
    print(f"{'bayescount nb_donor (warm)':28s}{warm:10.2f}{(ours.svalue < 0.05).mean():12.3f}")
    print(f"{'bayescount (first call)':28s}{first:10.2f}")
    print(f"{'statsmodels GLMM loop':28s}{ref:10.2f}{ref_calls.mean():12.3f}"
          + ("" if n_ref == data.n_genes else f"   (timed on {n_ref} genes, scaled)"))
    if tmb:
        print(f"{'glmmTMB loop (R)':28s}{tmb[0]:10.2f}{tmb[1]:12.3f}"
              + ("" if tmb[2] == data.n_genes else f"   (timed on {tmb[2]} genes, scaled)"))
    print(f"ratio statsmodels / bayescount warm: {ref / warm:.1f}x; first call {ref / first:.1f}x")
    if tmb:
        print(f"ratio glmmTMB / bayescount warm: {tmb[0] / warm:.1f}x; first call {tmb[0] / first:.1f}x")
    print(f"peak RSS {rss_ours:.0f} MiB; donor sd median {np.median(res.random_effects().re_sd):.3f} (truth 0.3)")


if __name__ == "__main__":
    main()
