"""NUTS back ends on the same nb_trend model: effective samples per second.

Each sampler runs in its own freshly spawned process on the same simulated
data (``bc.simulate(G genes, 6 vs 6)``), twice: the first call pays compilation
(numba for nutpie and PyMC, XLA for numpyro), the second is timed as "warm".
From the warm call: the smallest and median bulk ESS over the per-gene slopes
(``beta`` of ``group[T.B]``) and the shared ``a0``, ``a1``, ``sigma_d``, the
largest R-hat, divergences, and ESS per second of wall time.

Chains run in parallel where the back end can: nutpie (threads), PyMC
(processes), numpyro with two XLA host devices (``XLA_FLAGS`` is set in its
process before JAX is imported).

Run from the repository root::

    PYTHONPATH=. python benchmarks/bench_samplers.py --genes 200
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_map_vs_pydeseq2 import _maxrss_mib, run_isolated, to_markdown, versions  # noqa: E402


def _run(sampler: str, genes: int, draws: int, tune: int, seed: int) -> dict:
    if sampler == "numpyro":
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    from arviz_stats.base import array_stats

    import bayescount as bc

    sim = bc.simulate(n_genes=genes, n_per_group=6, random_seed=seed)
    out = {"sampler": sampler}
    for label in ("first", "warm"):
        t0 = time.perf_counter()
        res = bc.fit(sim.data, method="nuts", nuts_sampler=sampler, draws=draws, tune=tune, chains=2,
                     random_seed=seed)
        out[f"{label}_s"] = time.perf_counter() - t0
    post = res.idata["posterior"]
    slope = post["beta"].sel(coef="group[T.B]").transpose("chain", "draw", "gene").to_numpy()
    shared = np.stack([post[v].to_numpy() for v in ("a0", "a1", "sigma_d")], axis=-1)
    both = np.concatenate([slope, shared], axis=-1)
    ess = array_stats.ess(both, chain_axis=0, draw_axis=1, method="bulk")
    rhat = array_stats.rhat(both, chain_axis=0, draw_axis=1)
    div = res.idata["sample_stats"]["diverging"].to_numpy().sum() if "diverging" in res.idata["sample_stats"] else -1
    out.update({"ess_min": float(np.min(ess)), "ess_median": float(np.median(ess)),
                "ess_min_shared": float(np.min(ess[-3:])), "rhat_max": float(np.max(rhat)),
                "divergences": int(div), "peak_rss_MiB": _maxrss_mib()})
    out["min_ess_per_s"] = out["ess_min"] / out["warm_s"]
    out["median_ess_per_s"] = out["ess_median"] / out["warm_s"]
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--genes", type=int, default=200)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--tune", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--samplers", nargs="+", default=["nutpie", "pymc", "numpyro"])
    args = ap.parse_args(argv)
    print(versions())
    print(f"nb_trend, {args.genes} genes x 12 samples, {args.tune} tune + {args.draws} draws x 2 chains")
    rows = [run_isolated(_run, s, args.genes, args.draws, args.tune, args.seed) for s in args.samplers]
    table = pd.DataFrame(rows)
    print("\n" + to_markdown(table))


if __name__ == "__main__":
    main()
