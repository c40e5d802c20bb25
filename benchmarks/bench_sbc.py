"""Simulation-based calibration of every template and fit path, one table.

Each (template, method) draws genes from the template's prior
(``bayescount.sbc``), fits them and ranks every true value among the
posterior draws; calibrated ranks are uniform: ``cover_50``/``cover_90``
near 0.5/0.9, ``ks`` small (its 1% critical value is 1.63/sqrt(n)),
``mean_rank`` near 0.5. This is a calibration check, not a timing.

    PYTHONPATH=. python benchmarks/bench_sbc.py                      # MAP, every template
    PYTHONPATH=. python benchmarks/bench_sbc.py --methods nuts advi --genes 150 --templates nb_trend zinb_trend
    PYTHONPATH=. python benchmarks/bench_sbc.py --methods nuts --templates nb_trend --genes 50 --datasets 20 --hyper-prior
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bayescount.sbc import SBC_PRIORS, sbc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_map_vs_pydeseq2 import to_markdown  # noqa: E402

BULK = pd.DataFrame({"group": ["A"] * 6 + ["B"] * 6}, index=[f"s{i:02d}" for i in range(12)])
DONORS = pd.DataFrame({"group": np.repeat(["A", "B"], 12), "donor": np.repeat([f"d{i}" for i in range(8)], 3)},
                      index=[f"s{i:02d}" for i in range(24)])
# One-response templates: genes sharing a design are independent replicates of one regression
# (fixed priors), under moderate priors instead of their wide defaults.
TIDY = pd.DataFrame({"group": np.repeat(["A", "B"], 20), "x": np.random.default_rng(0).normal(size=40)},
                    index=[f"o{i:02d}" for i in range(40)])
MODERATE = {"intercept": {"mu": float(np.log(5.0)), "sigma": 1.0}, "coefficients": {"sigma": 0.5},
            "dispersion": {"sigma": 1.0}}
TEMPLATES = {
    "nb_trend": (BULK, "~ group", SBC_PRIORS),
    "poisson": (BULK, "~ group", SBC_PRIORS),
    "zinb_trend": (BULK, "~ group", SBC_PRIORS),
    "hurdle_trend": (BULK, "~ group", SBC_PRIORS),
    "nb_donor": (DONORS, "~ group + (1|donor)", SBC_PRIORS),
    "zinb_donor": (DONORS, "~ group + (1|donor)", SBC_PRIORS),
    "nb": (TIDY, "~ group + x", MODERATE),
    "zinb": (TIDY, "~ group + x", {**MODERATE, "zero_inflation": {"sigma": 1.0}}),
    "hurdle": (TIDY, "~ group + x", {**MODERATE, "zero_inflation": {"sigma": 1.0}}),
    "poisson_glm": (TIDY, "~ group + x", {k: v for k, v in MODERATE.items() if k != "dispersion"}),
}
#: Posterior draws per gene on the sampling paths (NUTS: 2 chains x 500, ranked together).
FIT_ARGS = {"map": {}, "advi": {"draws": 400}, "nuts": {"draws": 500, "tune": 500, "chains": 2}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--templates", nargs="+", default=list(TEMPLATES), choices=list(TEMPLATES))
    ap.add_argument("--methods", nargs="+", default=["map"], choices=list(FIT_ARGS))
    ap.add_argument("--genes", type=int, default=2000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--datasets", type=int, default=1,
                    help="data sets per (template, method, seed), their ranks pooled")
    ap.add_argument("--hyper-prior", action="store_true",
                    help="draw each data set's hyperparameters from their hyperpriors (the fully Bayesian check)")
    args = ap.parse_args(argv)
    rows = []
    for method in args.methods:
        for name in args.templates:
            samples, design, priors = TEMPLATES[name]
            for seed in args.seeds:
                t0 = time.perf_counter()
                summary, _ = sbc(name, samples, design, n_genes=args.genes, method=method, priors=priors,
                                 random_seed=seed, n_datasets=args.datasets,
                                 hyper="prior" if args.hyper_prior else None, **FIT_ARGS[method])
                seconds = time.perf_counter() - t0
                keep = ~summary.variable.eq("re") | summary.coord.str.endswith("[d0]")
                for r in summary[keep].itertuples():
                    rows.append({"template": name, "method": method, "seed": seed, "variable": r.variable,
                                 "coord": r.coord, "n": r.n, "cover_50": r.cover_50, "cover_90": r.cover_90,
                                 "ks": r.ks, "mean_rank": r.mean_rank, "seconds": seconds})
                print(pd.DataFrame(rows[-int(keep.sum()):]).round(3).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    print("\n" + to_markdown(table.round(3)))


if __name__ == "__main__":
    main()
