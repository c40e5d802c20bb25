"""False-discovery proportion and power of ``nb_trend`` MAP calls over simulation seeds.

For each seed: ``bc.simulate(genes, n_per_group, random_seed=seed)`` (10% DE genes),
``bc.fit(method="map")``, then the ``svalue < 0.1`` and ``padj < 0.1`` calls are
scored against the truth (a call is right when the gene is DE and the sign is
right). Also prints the learned null weight against the simulated null
fraction, the calls' expected FDR (their mean lfsr) and how often null genes'
p-values fall below 0.05, 0.01, 1e-3 and 1e-4 relative to nominal.

Usage
-----
::

    PYTHONPATH=. python benchmarks/bench_fdr_seeds.py [--seeds 1,2,3,4,5] [--genes 20000] [--per-group 6]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import bayescount as bc

THRESH = 0.1


def score(seed: int, genes: int, per_group: int) -> dict:
    sim = bc.simulate(n_genes=genes, n_per_group=per_group, random_seed=seed)
    t0 = time.perf_counter()
    res = bc.fit(sim.data, method="map", random_seed=1)
    table = res.lfc(["group", "B", "A"])
    seconds = time.perf_counter() - t0
    truth = sim.truth.loc[table.gene]
    right = truth.is_de.to_numpy() & (np.sign(table.log2fc.to_numpy()) == np.sign(truth.true_log2fc.to_numpy()))
    n_de = int(truth.is_de.sum())
    null = ~truth.is_de.to_numpy()
    out = {"seed": seed, "seconds": round(seconds, 2), "pi0": float(res.hyper["pi"][0]), "null_fraction": null.mean()}
    for rule, called in (("svalue", table.svalue.to_numpy() < THRESH), ("padj", table.padj.to_numpy() < THRESH)):
        n = int(called.sum())
        out[f"{rule}_calls"] = n
        out[f"{rule}_FDR"] = 1 - right[called].mean() if n else np.nan
        out[f"{rule}_power"] = right[called].sum() / n_de
    out["expected_FDR"] = float(table.lfsr.to_numpy()[table.svalue.to_numpy() < THRESH].mean())
    p = table.pvalue.to_numpy()[null]
    for q in (0.05, 0.01, 1e-3, 1e-4):
        out[f"null_p<{q:g}_x_nominal"] = (p < q).mean() / q
    return out


def main(argv=None) -> None:
    import pandas as pd

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="1,2,3,4,5")
    ap.add_argument("--genes", type=int, default=20000)
    ap.add_argument("--per-group", type=int, default=6)
    args = ap.parse_args(argv)
    rows = [score(int(s), args.genes, args.per_group) for s in args.seeds.split(",")]
    frame = pd.DataFrame(rows)
    pd.set_option("display.width", 250)
    print(frame.round(4).to_string(index=False))
    print("\nmeans:")
    print(frame.drop(columns="seed").mean().round(4).to_string())


if __name__ == "__main__":
    main()
