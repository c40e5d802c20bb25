"""Per-gene LOO (and WAIC, PPC) at genome scale: time and peak memory under a chunk budget.

Usage::

    PYTHONPATH=. python benchmarks/bench_loo.py --genes 20000 --memory 1GB
    PYTHONPATH=. python benchmarks/bench_loo.py --genes 2000 --method nuts

MAP path (default): ``nb_trend`` on ``bc.simulate(genes, 6 vs 6)`` with 200 Laplace
draws, then ``bc.loo``, ``bc.waic`` and ``bc.ppc`` with the given per-chunk memory
budget. NUTS: the same data fitted by NUTS (nutpie, 2 chains x 500 draws). Printed:
wall time of each step, the process's peak RSS after the fit and after the checks
(the difference is what the checks added), and the size one full
draws x genes x samples log-likelihood array would have taken.
"""

from __future__ import annotations

import argparse
import logging
import resource
import time

import bayescount as bc


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--genes", type=int, default=20000)
    ap.add_argument("--method", default="map", choices=["map", "nuts"])
    ap.add_argument("--memory", default="1GB")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sim = bc.simulate(n_genes=args.genes, n_per_group=6, random_seed=args.seed)
    t0 = time.perf_counter()
    if args.method == "map":
        res = bc.fit(sim.data, method="map", random_seed=1, draws=200)
    else:
        res = bc.fit(sim.data, method="nuts", random_seed=1, draws=500, tune=500, chains=2)
    t_fit = time.perf_counter() - t0
    rss_fit = rss_mib()
    n_draws = res.idata["posterior"].sizes["chain"] * res.idata["posterior"].sizes["draw"]
    full_mib = n_draws * args.genes * 12 * 8 / 2**20
    rows = []
    for name, fn in (("loo", bc.loo), ("waic", bc.waic), ("ppc", bc.ppc)):
        t = time.perf_counter()
        out = fn(res, memory=args.memory)
        rows.append((name, time.perf_counter() - t))
        if name == "loo":
            n_flag = int((out.genes.n_high_k > 0).sum())
    print(f"{args.genes} genes x 12 samples, {args.method}, {n_draws} draws; chunk budget {args.memory}")
    print(f"fit: {t_fit:.1f} s; peak RSS after the fit {rss_fit:.0f} MiB")
    print("\n| step | seconds |\n|---|---|")
    for name, sec in rows:
        print(f"| {name} | {sec:.1f} |")
    print(f"\npeak RSS after the checks: {rss_mib():.0f} MiB (+{rss_mib() - rss_fit:.0f} MiB); a full "
          f"draws x genes x samples log-likelihood would be {full_mib:.0f} MiB")
    print(f"genes with an observation at Pareto k > 0.7: {n_flag}")


if __name__ == "__main__":
    main()
