"""MAP lfsr against a brute-force grid posterior at the same hyperparameters.

Simulates ``bc.simulate(n_genes, n_per_group=6, random_seed=seed)`` (10% DE),
fits ``nb_trend`` on the MAP path, then for a random sample of genes with MAP
lfsr in [1e-4, 0.3] integrates the model's posterior on a grid with the fitted
hyperparameters held fixed: the slope on 10,000+ points (fine near zero, where
the null component sits), the log-dispersion on 61 points around the MAP
path's posterior, and the intercept by Laplace at every (slope,
log-dispersion) point (it is well determined). Each LFC-prior component's
evidence and wrong-sign mass give the grid's lfsr, the same definition as the
table's (the null component's weight counts as an error for either sign).

Prints the ratio MAP lfsr / grid lfsr (summary, by base-mean quartile) and how
many genes are off by more than 10% and 20%. About 1.4 s per gene.

Run: ``PYTHONPATH=. python benchmarks/bench_lfsr_grid.py --genes 20000 --check 150``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from scipy import special

import bayescount as bc
from bayescount.map_hyper import _hyper_functions, pack_u
from bayescount.model import layout


def grid_lfsr(y, X, off, i_loc, i_scale, d_loc, d_scale, pi, grid, d_mean, d_sd):
    """lfsr of one gene by grid integration (intercept by Laplace at each grid point)."""
    bgrid = np.unique(np.concatenate([np.linspace(-0.12, 0.12, 241), np.linspace(-10, 10, 10001)]))
    wb = np.gradient(bgrid)
    dgrid = np.linspace(d_mean - 6 * max(d_sd, 0.05), d_mean + 6 * max(d_sd, 0.05), 61)
    B, D = np.meshgrid(bgrid, dgrid, indexing="ij")
    r = np.exp(-D)[..., None]
    base = off[None, None, :] + B[..., None] * X[None, None, :, 1]
    b0 = np.full(B.shape, np.log(y.mean() + 0.5) - off.mean())
    for _ in range(30):
        mu = np.exp(base + b0[..., None])
        w = r / (r + mu)
        grad = np.sum((y - mu) * w, axis=-1) - (b0 - i_loc) / i_scale**2
        hess = -np.sum(mu * w * (y + r) / (r + mu), axis=-1) - 1 / i_scale**2
        step = -grad / hess
        b0 = b0 + np.clip(step, -3, 3)
        if np.abs(step).max() < 1e-10:
            break
    mu = np.exp(base + b0[..., None])
    ll = np.sum(special.gammaln(y + r) - special.gammaln(r) - special.gammaln(y + 1)
                + r * np.log(r / (r + mu)) + y * np.log(mu / (r + mu)), axis=-1)
    w = r / (r + mu)
    info = np.sum(mu * w * (y + r) / (r + mu), axis=-1) + 1 / i_scale**2
    lp = ll - 0.5 * ((b0 - i_loc) / i_scale) ** 2 - 0.5 * np.log(info) - 0.5 * ((D - d_loc) / d_scale) ** 2
    top = lp.max()
    marg = np.log(np.sum(np.exp(lp - top), axis=1)) + top  # log-dispersion integrated out, (slope,)
    log_z, p_neg = np.full(pi.size, -np.inf), np.full(pi.size, 0.5)
    for c, (p, s) in enumerate(zip(pi, grid)):
        if p <= 0:
            continue
        lpc = marg - 0.5 * (bgrid / s) ** 2 - np.log(s) + np.log(p)
        m = lpc.max()
        dens = np.exp(lpc - m) * wb
        log_z[c] = np.log(dens.sum()) + m
        p_neg[c] = dens[bgrid < 0].sum() / dens.sum()
    wc = np.exp(log_z - log_z.max())
    wc /= wc.sum()
    return min(wc[0] + np.sum(wc[1:] * p_neg[1:]), wc[0] + np.sum(wc[1:] * (1 - p_neg[1:])))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--genes", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--check", type=int, default=150, help="genes integrated on the grid")
    args = ap.parse_args()
    sim = bc.simulate(n_genes=args.genes, n_per_group=6, random_seed=args.seed)
    data = sim.data
    res = bc.fit(data, model="nb_trend", method="map", random_seed=1)
    tab = res.lfc(["group", "B", "A"])
    lay = layout(res.spec, data)
    hyper = res.hyper
    u = pack_u(lay, {k: v for k, v in hyper.items() if k != "pi"})
    loc, scale = _hyper_functions(res.spec, lay).prior_fn(u, data.base_mean)
    pi, grid = np.asarray(hyper["pi"]), lay.mixture.grid()
    k_int, k_disp = lay.names.index("Intercept"), lay.names.index("log_dispersion")
    log_disp = res.idata.posterior["log_dispersion"].isel(chain=0).values  # (draw, gene)
    rng = np.random.default_rng(0)
    lfsr = tab.lfsr.to_numpy()
    cand = np.flatnonzero((lfsr > 1e-4) & (lfsr < 0.3))
    pick = np.sort(rng.choice(cand, size=min(args.check, cand.size), replace=False))
    t0 = time.perf_counter()
    rows = []
    for g in pick:
        ref = grid_lfsr(data.counts[g].astype(float), data.design.matrix, data.offset, loc[g, k_int], scale[g, k_int],
                        loc[g, k_disp], scale[g, k_disp], pi, grid, log_disp[:, g].mean(), log_disp[:, g].std())
        rows.append((tab.gene.iloc[g], tab.base_mean.iloc[g], lfsr[g], ref))
    df = pd.DataFrame(rows, columns=["gene", "base_mean", "lfsr_map", "lfsr_grid"])
    df["ratio"] = df.lfsr_map / df.lfsr_grid
    log_r = np.log(df.ratio)
    print(f"{len(df)} genes integrated in {time.perf_counter() - t0:.0f} s; seed {args.seed}, {args.genes} genes")
    print(df.ratio.describe().round(3).to_string())
    df["base_mean_quartile"] = pd.qcut(np.log10(df.base_mean), 4)
    print(df.groupby("base_mean_quartile", observed=True)[["lfsr_map", "lfsr_grid", "ratio"]].median().round(4))
    print(f"|log ratio| > 0.1: {(log_r.abs() > 0.1).sum()}, > 0.2: {(log_r.abs() > 0.2).sum()} "
          f"(lfsr of those: {df.lfsr_grid[log_r.abs() > 0.2].max():.4f} at most)")


if __name__ == "__main__":
    main()
