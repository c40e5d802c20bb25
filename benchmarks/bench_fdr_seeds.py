"""False-discovery proportion and power of ``nb_trend`` MAP calls over simulation seeds.

For each seed: ``bc.simulate(genes, n_per_group, random_seed=seed)`` (10% DE genes),
``bc.fit(method="map")``, then the ``svalue < 0.1`` and ``padj < 0.1`` calls are
scored against the truth (a call is right when the gene is DE and the sign is
right). Also prints the learned null weight against the simulated null
fraction, the calls' expected FDR (their mean lfsr) and how often null genes'
p-values fall below 0.05, 0.01, 1e-3 and 1e-4 relative to nominal.

With ``--peers pydeseq2,edger,deseq2`` each peer runs on the same data too
(pydeseq2 with 2 cpus; the R peers where installed, see ``r_peers.py``):
its ``padj < 0.1`` calls are scored the same way, and every rule's
``power_at_FDR`` (the power of its ranking cut where its realized FDR last is
<= 0.1) puts the tools' power side by side at the same false-discovery
proportion. The means over seeds close the table, with the standard error of
each mean (sd / sqrt(seeds)).

Usage
-----
::

    PYTHONPATH=. python benchmarks/bench_fdr_seeds.py [--seeds 1,2,3,4,5] [--genes 20000] [--per-group 6]
        [--peers pydeseq2,edger]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import bayescount as bc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_map_vs_pydeseq2 import _peer, calls, power_at_fdr, run_isolated  # noqa: E402  (the same scoring)
import r_peers  # noqa: E402


def score(seed: int, genes: int, per_group: int, peers=()) -> dict:
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
        out[f"{rule}_power_at_FDR"] = power_at_fdr(tab["log2fc"], tab[rule], truth)
    for peer in peers:
        if peer == "pydeseq2":
            pt = run_isolated(_peer, sim.counts, sim.samples, seed)["table_first"]
            lfc, padj = pt["log2FoldChange"], pt["padj"]
        else:
            pt = r_peers.run(peer, sim.counts, sim.samples)["table"]
            lfc, padj = pt["log2fc"], pt["padj"]
        scored = calls(lfc, padj, truth)
        out[f"{peer}_FDR"], out[f"{peer}_power"] = scored["FDR"], scored["power"]
        out[f"{peer}_power_at_FDR"] = power_at_fdr(lfc, padj, truth)
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
    ap.add_argument("--peers", default="", help="comma-separated: pydeseq2, edger, deseq2 (default none)")
    args = ap.parse_args(argv)
    peers = [p.strip().lower() for p in args.peers.split(",") if p.strip()]
    for p in peers:
        if p != "pydeseq2" and not r_peers.available(p):
            ap.error(f"peer {p!r} is not installed (see benchmarks/r_peers.py)")
    rows = []
    for s in args.seeds.split(","):
        rows.append(score(int(s), args.genes, args.per_group, peers))
        print(f"seed {s}: " + ", ".join(f"{k} {v:.4g}" for k, v in rows[-1].items() if k != "seed"), flush=True)
    frame = pd.DataFrame(rows)
    pd.set_option("display.width", 250)
    print(frame.round(4).to_string(index=False))
    body = frame.drop(columns="seed")
    print("\nmeans over seeds (standard error of the mean):")
    print(pd.DataFrame({"mean": body.mean(), "se": body.std(ddof=1) / len(body) ** 0.5}).round(4).to_string())


if __name__ == "__main__":
    main()
