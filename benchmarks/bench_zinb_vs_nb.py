"""ZINB MAP against nb_trend MAP on the same zero-inflated data (time, memory, accuracy).

Usage::

    PYTHONPATH=. python benchmarks/bench_zinb_vs_nb.py --genes 20000

Each template is fitted twice in one process (the first call pays the compile,
the second is the warm time) on ``bc.simulate(..., zero_inflation=(-2, 1))``:
10% DE genes, 6 vs 6, logit structural-zero probability ~ N(-2, 1). Reported:
warm wall time (counts in, LFC table out), its ratio to nb_trend's, peak RSS
of the whole process, FDR/power of ``svalue < 0.1`` calls and the LFC
correlation with the truth (genes with true mean >= 10).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

import bayescount as bc


def run(sim, model):
    t0 = time.perf_counter()
    data = bc.CountData.from_pandas(sim.counts, sim.samples, "~ group")
    res = bc.fit(data, model=model, method="map", random_seed=1)
    table = res.lfc(["group", "B", "A"])
    return time.perf_counter() - t0, res, table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--genes", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    sim = bc.simulate(n_genes=args.genes, n_per_group=6, zero_inflation=(-2.0, 1.0), random_seed=args.seed)
    print(f"data: {args.genes} genes x 12 samples, {int(sim.truth.is_de.sum())} DE, zero inflation N(-2, 1)")
    rows = []
    for model in ("nb_trend", "zinb_trend"):
        first, _, _ = run(sim, model)
        warm, res, table = run(sim, model)
        truth = sim.truth.loc[table.gene]
        right = truth.is_de.to_numpy() & (np.sign(table.log2fc.to_numpy()) == np.sign(truth.true_log2fc.to_numpy()))
        calls = table.svalue.to_numpy() < 0.1
        high = truth.true_base_mean.to_numpy() >= 10
        corr = np.corrcoef(table.log2fc[high], truth.true_log2fc[high])[0, 1]
        rows.append((model, first, warm, calls.sum(), 1 - right[calls].mean() if calls.any() else 0.0,
                     right[calls].sum() / truth.is_de.sum(), corr))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    base = rows[0][2]
    print("\n| template | first_s | warm_s | warm / nb_trend | calls | FDR | power | LFC corr (mean>=10) |")
    print("|---|---|---|---|---|---|---|---|")
    for model, first, warm, n, fdr, power, corr in rows:
        print(f"| {model} | {first:.2f} | {warm:.2f} | {warm / base:.2f} | {n} | {fdr:.3f} | {power:.3f} | {corr:.3f} |")
    print(f"\npeak RSS of the process (both templates): {rss:.0f} MiB")


if __name__ == "__main__":
    main()
