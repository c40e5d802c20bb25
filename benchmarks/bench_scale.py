"""Time and peak memory of the chunked MAP path as the number of samples grows.

Usage::

    PYTHONPATH=. python benchmarks/bench_scale.py --genes 20000 --samples 200 1000 --memory 1GB

For each size the counts are simulated in a child process and saved with numpy
(so the simulator's own arrays do not count), then a fresh process loads
them, builds the CountData and runs ``fit_chunked`` (MAP, ``nb_trend``,
``~ group``) with the given chunk budget. Printed per size: wall time, its
ratio per sample to the smallest size, peak RSS of the fitting process (and of
its imports alone) and the peak above the imports as a multiple of the float64
count matrix.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def prepare(genes: int, samples: int, path: str) -> None:
    import numpy as np

    import bayescount as bc

    sim = bc.simulate(n_genes=genes, n_per_group=samples // 2, frac_de=0.1, random_seed=1)
    np.savez(path, counts=sim.counts.to_numpy(), group=sim.samples.group.to_numpy(),
             genes=np.asarray(sim.counts.index), obs=np.asarray(sim.counts.columns),
             is_de=sim.truth.is_de.to_numpy(), lfc=sim.truth.true_log2fc.to_numpy())


def measure(path: str, memory: str) -> dict:
    import numpy as np
    import pandas as pd

    import bayescount as bc
    from bayescount.chunked import fit_chunked

    base_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the imports (pymc, pytensor, ...)
    z = np.load(path, allow_pickle=True)
    t0 = time.perf_counter()
    counts = pd.DataFrame(z["counts"], index=z["genes"], columns=z["obs"])
    samples = pd.DataFrame({"group": z["group"]}, index=z["obs"])
    data = bc.CountData.from_pandas(counts, samples, design="~ group")
    del counts
    with tempfile.TemporaryDirectory() as tmp:
        table = fit_chunked(data, Path(tmp) / "run.zarr", memory=memory, random_seed=1)
    seconds = time.perf_counter() - t0
    calls = table.svalue.to_numpy() < 0.1
    right = z["is_de"] & (np.sign(table.log2fc.to_numpy()) == np.sign(z["lfc"]))
    return {"seconds": seconds, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "base_mib": base_mib,
            "matrix_mib": z["counts"].size * 8 / 2**20, "fdr": float(1 - right[calls].mean()) if calls.any() else 0.0,
            "power": float(right[calls].sum() / z["is_de"].sum())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--genes", type=int, default=20000)
    ap.add_argument("--samples", type=int, nargs="+", default=[200, 1000])
    ap.add_argument("--memory", default="1GB")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, path, arg = args.child
        if kind == "prepare":
            prepare(args.genes, int(arg), path)
        else:
            print(json.dumps(measure(path, arg)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.samples:
            path = f"{tmp}/counts_{n}.npz"
            base = [sys.executable, __file__, "--genes", str(args.genes), "--child"]
            subprocess.run(base + ["prepare", path, str(n)], check=True)
            out = subprocess.run(base + ["measure", path, args.memory], check=True, capture_output=True, text=True)
            rows.append((n, json.loads(out.stdout.strip().splitlines()[-1])))
    first_n, first = rows[0]
    print(f"{args.genes} genes, chunk budget {args.memory}\n")
    print("| samples | seconds | s per sample vs smallest | peak RSS MiB (imports) | matrix MiB "
          "| (peak - imports) / matrix | FDR | power |")
    print("|---|---|---|---|---|---|---|---|")
    for n, r in rows:
        rel = (r["seconds"] / n) / (first["seconds"] / first_n)
        print(f"| {n} | {r['seconds']:.1f} | {rel:.2f} | {r['rss_mib']:.0f} ({r['base_mib']:.0f}) | {r['matrix_mib']:.0f} "
              f"| {(r['rss_mib'] - r['base_mib']) / r['matrix_mib']:.2f} | {r['fdr']:.3f} | {r['power']:.3f} |")


if __name__ == "__main__":
    main()
