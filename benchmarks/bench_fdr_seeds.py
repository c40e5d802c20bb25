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
import sys
import time
from pathlib import Path

import bayescount as bc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_map_vs_pydeseq2 import calls  # noqa: E402  (the same scoring as every benchmark)


def score(seed: int, genes: int, per_group: int) -> dict:
    sim = bc.simulate(n_genes=genes, n_per_group=per_group, random_seed=seed)
    t0 = time.perf_counter()
    res = bc.fit(sim.data, method="map", random_seed=1)
    table = res.lfc(["group", "B", "A"])
    seconds = time.perf_counter() - t0
    tab = table.set_index("gene")
    truth = sim.truth.loc[tab.index]
    null = ~truth.is_de.to_numpy()
    out = {"seed": seed, "seconds": round(seconds, 2), "pi0": float(res.hyper["pi"][0]), "null_fraction": null.mean()}
    for rule in ("svalue", "padj"):
        scored = calls(tab["log2fc"], tab[rule], truth)
        out[f"{rule}_calls"], out[f"{rule}_FDR"], out[f"{rule}_power"] = scored["calls"], scored["FDR"], scored["power"]
    out["expected_FDR"] = float(tab.lfsr[tab.svalue < 0.1].mean())
    p = tab.pvalue.to_numpy()[null]
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
