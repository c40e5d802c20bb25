"""Plots, the HTML report (rendered in headless Chromium), and the compare/report commands."""

import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

import bayescount as bc
from bayescount import plots
from bayescount.cli import main
from bayescount.report import write_report

SEED = 5120
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SECTIONS = ("data", "models", "diagnostics", "results", "plots", "comparison")


@pytest.fixture(scope="module")
def zi_fits():
    sim = bc.simulate(n_genes=150, n_per_group=6, zero_inflation=(-1.5, 1.0), random_seed=SEED)
    return sim, {m: bc.fit(sim.data, model=m, random_seed=SEED, draws=200) for m in ("nb_trend", "zinb_trend")}


def _chromium(args, tmp_path):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chrome'}", "--virtual-time-budget=5000"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


def test_every_plot_returns_a_figure(zi_fits, tmp_path):
    _, fits = zi_fits
    res = fits["nb_trend"]
    genes, overall = bc.compare(fits)
    figs = [plots.plot_ma(res), plots.plot_volcano(res, y="svalue"), plots.plot_dispersion(res),
            plots.plot_ppc(res, str(res.genes[0])), plots.plot_compare(overall), plots.plot_pareto_k(bc.loo(res)),
            plots.plot_lfc_intervals(res, list(res.genes[:5])),
            plots.plot_sbc(pd.DataFrame({"variable": "beta", "coord": "x", "gene": range(100),
                                         "rank": np.random.default_rng(0).random(100)}))]
    for i, fig in enumerate(figs):
        for ext in ("png", "svg"):
            fig.savefig(tmp_path / f"f{i}.{ext}")
            assert (tmp_path / f"f{i}.{ext}").stat().st_size > 1000
    with pytest.raises(bc.InputError, match="lfsr"):
        plots.plot_volcano(res, y="pvalue")


def test_report_renders_in_headless_chromium(zi_fits, tmp_path):
    _, fits = zi_fits
    path = write_report(fits, tmp_path / "report.html")
    html = path.read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in html
    assert "zinb_trend: best overall" in html
    assert html.count("data:image/png;base64,") >= 7
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); .ci/run installs it where it can")
    shot = _chromium(["--window-size=1200,3000", f"--screenshot={tmp_path / 'shot.png'}", path.as_uri()], tmp_path)
    assert (tmp_path / "shot.png").exists() and (tmp_path / "shot.png").stat().st_size > 20_000, shot.stderr[-500:]
    dom = _chromium(["--dump-dom", path.as_uri()], tmp_path).stdout
    for section in SECTIONS:
        assert f'id="{section}"' in dom
    loaded = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    assert loaded, "the page's load handler did not run"
    assert loaded.group(1) == loaded.group(2) and int(loaded.group(2)) >= 7


def test_cli_compare_genes_and_report(zi_fits, tmp_path):
    sim, _ = zi_fits
    sim.counts.iloc[:60].to_csv(tmp_path / "c.csv")
    sim.samples.to_csv(tmp_path / "s.csv")
    rc = main(["compare", str(tmp_path / "c.csv"), "--samples", str(tmp_path / "s.csv"), "--design", "~ group",
               "--models", "poisson,nb_trend", "--out", str(tmp_path / "cmp.csv"), "--report",
               str(tmp_path / "r.html"), "--seed", "1", "--quiet"])
    assert rc == 0
    table = pd.read_csv(tmp_path / "cmp.csv")
    assert list(table.columns[:4]) == ["gene", "preferred", "elpd_diff", "dse"]
    assert {"elpd_poisson", "elpd_nb_trend"} <= set(table.columns) and len(table) == 60
    assert (tmp_path / "r.html").stat().st_size > 10_000
    rc = main(["compare", str(tmp_path / "c.csv"), "--samples", str(tmp_path / "s.csv"), "--design", "~ group",
               "--models", "nb_trend", "--out", str(tmp_path / "bad.csv")])
    assert rc == 2 and not (tmp_path / "bad.csv").exists()


def test_cli_compare_tidy_and_report_from_saved_fits(tmp_path):
    rng = np.random.default_rng(2)
    n = 400
    df = pd.DataFrame({"x": rng.normal(size=n), "g": rng.choice(["a", "b"], n)})
    mu = np.exp(1.0 + 0.4 * df.x)
    df["y"] = np.where(rng.random(n) < 0.3, 0, rng.negative_binomial(2.0, 2.0 / (2.0 + mu)))
    df.to_csv(tmp_path / "d.csv", index=False)
    rc = main(["compare", str(tmp_path / "d.csv"), "--formula", "y ~ x | g", "--models", "poisson,nb,zinb",
               "--out", str(tmp_path / "cmp.csv"), "--seed", "1", "--quiet"])
    assert rc == 0
    table = pd.read_csv(tmp_path / "cmp.csv")
    assert list(table.columns) == ["model", "rank", "elpd", "se", "elpd_diff", "dse", "p_loo", "weight"]
    assert table.model.iloc[0] == "zinb" and table.model.iloc[-1] == "poisson"
    for m in ("nb", "zinb"):
        assert main(["regress", str(tmp_path / "d.csv"), "--formula", "y ~ x" + (" | g" if m == "zinb" else ""),
                     "--model", m, "--save", str(tmp_path / f"{m}.nc"), "--seed", "1", "--quiet"]) == 0
    rc = main(["report", str(tmp_path / "nb.nc"), str(tmp_path / "zinb.nc"), "--out", str(tmp_path / "r.html")])
    assert rc == 0 and "zinb: best overall" in (tmp_path / "r.html").read_text()


def test_diagnostics_table(zi_fits):
    from bayescount.diagnostics import diagnostics

    _, fits = zi_fits
    genes, checks = diagnostics(fits["nb_trend"])
    assert checks.check.tolist() == ["map_not_converged"] and bool(checks.ok.iloc[0])
    assert genes.ok.all() and len(genes) == 150
