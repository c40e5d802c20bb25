"""Is the model calibrated on *my* design? Simulation-based calibration before the real fit.

A paired design (6 donors, each measured before and after treatment) is checked
two ways before any real data are fitted:

1. ``nb_trend`` with the donor as an adjustment term (``~ donor + condition``):
   genes are drawn from the template's own prior on this sample table, fitted
   by MAP, and each true LFC is ranked among its posterior draws. Calibrated
   ranks are uniform: central 50% and 90% intervals cover about 0.5 and 0.9.
2. The same with the donor as a random effect (``nb_donor``,
   ``~ condition + (1|donor)``), whose donor effects and their shrinkage are
   part of what is checked.

What it prints (seed 1, 1,500 genes): the adjusted ``nb_trend`` LFC covers 0.47 / 0.897
(50% / 90%); ``nb_donor``'s covers 0.474 / 0.875 and its donor effects 0.479 / 0.901.
The donor template's LFC intervals are a little narrow here: with 6 donors an LFC of
0.3 is hard to tell from none, and the learned null weight of the LFC prior is a plug-in
(README, Known limitations). Note that in ``~ donor + condition`` the donor coefficients
share the intercept's prior, so the check draws large donor effects; that is still an
exact check of this model.

Rank histograms go to ``calibration_check.png`` (grey: where 99% of a bin's
counts fall when the ranks are uniform). Run from the repository root::

    python examples/calibration_check.py

Takes about 30 s warm (the first run compiles the templates' kernels).
"""

import numpy as np
import pandas as pd

import bayescount as bc
from bayescount.plots import plot_sbc

donors = [f"donor{i}" for i in range(6)]
samples = pd.DataFrame(
    {"donor": np.repeat(donors, 2), "condition": np.tile(["ctrl", "treated"], 6)},
    index=[f"s{i:02d}" for i in range(12)],
)

summary, ranks = bc.sbc("nb_trend", samples, "~ donor + condition", n_genes=1500, random_seed=1)
print("nb_trend, ~ donor + condition")
print(summary[summary.coord.str.startswith("condition")].round(3).to_string(index=False))

summary_re, ranks_re = bc.sbc("nb_donor", samples, "~ condition + (1|donor)", n_genes=1500, random_seed=1)
print("\nnb_donor, ~ condition + (1|donor)")
shown = summary_re[~summary_re.variable.eq("re") | summary_re.coord.str.endswith("[donor0]")]
print(shown.round(3).to_string(index=False))

fixed = ranks[ranks.coord.str.startswith("condition")].assign(variable="nb_trend LFC")
random = ranks_re[ranks_re.coord.str.startswith("condition") | ranks_re.coord.str.endswith("[donor0]")]
both = pd.concat([fixed, random.assign(variable="nb_donor " + random.variable)])
plot_sbc(both).savefig("calibration_check.png")
print("\nrank histograms written to calibration_check.png")
