"""Gene chunks on threads change the speed of the MAP path, not its answers.

Every gene's computation is its own, but matrix products over chunks of a
different size may round their last bit differently, and the hyperparameters'
optimizer (tolerance 2e-3) carries such differences to ~1e-6 in the answers:
equal to 1e-4 relative is the promise; repeated runs on one thread count are
equal to the bit.
"""

import threading
import time

import numpy as np
import pytest

import bayescount as bc
from bayescount import _threads, map_draws
from bayescount.errors import InputError

LFC_COLUMNS = ["log2fc", "log2fc_sd", "hdi_low", "hdi_high", "lfsr", "svalue", "dispersion", "pvalue", "padj"]


def fit_both(data, model, contrast, monkeypatch, **kw):
    """One fit on a single thread and one in 3 gene chunks on 2 threads (chunks made small)."""
    monkeypatch.setattr(_threads, "MIN_CHUNK", max(1, data.n_genes * data.n_obs // 3))
    monkeypatch.setattr(map_draws, "DRAW_BLOCK", data.n_genes // 3 + 1)  # the random streams too
    one = bc.fit(data, model=model, method="map", random_seed=3, n_threads=1, **kw)
    two = bc.fit(data, model=model, method="map", random_seed=3, n_threads=3, **kw)
    assert two.idata.attrs["timings"].count('"n_threads": 3') == 1
    return one, two, one.lfc(contrast), two.lfc(contrast)


def assert_same(a, b, columns):
    for col in columns:
        if col in a:
            np.testing.assert_allclose(b[col].to_numpy(), a[col].to_numpy(), rtol=1e-4, atol=1e-6, err_msg=col)
    assert (a["flag"] == b["flag"]).all()


def test_nb_trend_answers_do_not_depend_on_threads(sim_de, monkeypatch):
    """Hyperparameters, tables and Laplace draws are the same on 1 and 3 threads."""
    one, two, a, b = fit_both(sim_de.data, "nb_trend", ["group", "B", "A"], monkeypatch)
    assert_same(a, b, LFC_COLUMNS)
    for name, value in one.hyper.items():
        np.testing.assert_allclose(two.hyper[name], value, rtol=1e-4, atol=1e-8, err_msg=name)
    np.testing.assert_allclose(two.idata["posterior"]["beta"].values, one.idata["posterior"]["beta"].values,
                               rtol=1e-4, atol=1e-6)


def test_zinb_and_donor_answers_do_not_depend_on_threads(monkeypatch):
    """The templates with a sliced coordinate (zero-inflation) and with product grids (donor effects)."""
    zi = bc.simulate(n_genes=240, n_per_group=4, frac_de=0.2, zero_inflation=(-2.0, 0.8), random_seed=8).data
    _, _, a, b = fit_both(zi, "zinb_trend", ["group", "B", "A"], monkeypatch)
    assert_same(a, b, LFC_COLUMNS)
    sim = bc.simulate_cells(n_genes=60, n_donors_per_group=3, cells_per_donor=20, donor_sd=0.4, frac_de=0.3,
                            mean_log=1.0, random_seed=9)
    data = bc.CountData.from_pandas(sim.counts, sim.samples, "~ condition + (1|donor)", size_factors="poscounts")
    one, two, a, b = fit_both(data, "nb_donor", ["condition", "B", "A"], monkeypatch)
    assert_same(a, b, LFC_COLUMNS)
    # Donor sds are draw averages over slots picked by uniform draws against the slots' weights:
    # a weight moved by 1e-6 can move one draw of 200 to a neighbouring node (~0.5% of the mean).
    np.testing.assert_allclose(two.idata["laplace"]["mix_weight"].values, one.idata["laplace"]["mix_weight"].values,
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(two.random_effects().re_sd, one.random_effects().re_sd, rtol=0.01)


def test_compiled_kernels_release_the_gil():
    """The likelihood kernels are called through their jitted cores compiled with nogil: without
    that, gene chunks on threads would run one at a time."""
    from bayescount.model import layout
    from bayescount.newton import GeneProblem

    data = bc.simulate(n_genes=20, n_per_group=3, random_seed=1).data
    spec = bc.load_spec("nb_trend")
    prob = GeneProblem(spec, data, layout(spec, data))
    assert prob.full.releases_gil and prob.value.releases_gil and prob.pointwise.releases_gil


def test_run_chunks_keeps_order_runs_nested_calls_inline_and_raises():
    seen = []

    def work(i):
        # A nested call runs in line on the chunk's own thread.
        inner = _threads.run_chunks(lambda j: (j, threading.get_ident()), range(3), 2)
        assert {t for _, t in inner} == {threading.get_ident()}
        seen.append(threading.get_ident())
        time.sleep(0.02)  # long enough that both threads take items
        return i * i

    assert _threads.run_chunks(work, range(7), 2) == [i * i for i in range(7)]
    assert len(set(seen)) == 2

    def boom(i):
        if i == 5:
            raise ValueError("chunk 5 failed")
        return i

    with pytest.raises(ValueError, match="chunk 5 failed"):
        _threads.run_chunks(boom, range(6), 2)


def test_thread_settings_are_checked(monkeypatch):
    assert _threads.gene_chunks(2999, 4, per_gene=10, min_chunk=10_000) == [slice(0, 1500), slice(1500, 2999)]
    assert _threads.gene_chunks(100, 2, per_gene=2000) == [slice(0, 25), slice(25, 50), slice(50, 75), slice(75, 100)]
    assert _threads.gene_chunks(5000, 1, per_gene=12) == [slice(0, 5000)]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InputError, match=r"n_threads \(--threads\) must be a positive integer"):
            _threads.resolve_threads(bad)
    monkeypatch.setenv("BAYESCOUNT_THREADS", "3")
    assert _threads.default_threads() == 3
    with _threads.threads_limit(1):
        assert _threads.default_threads() == 1
    assert _threads.default_threads() == 3
    monkeypatch.setenv("BAYESCOUNT_THREADS", "two")
    with pytest.raises(InputError, match="BAYESCOUNT_THREADS='two'"):
        _threads.default_threads()


def test_join_states_pads_narrower_chunks_with_weightless_copies():
    """Chunks of different slot widths join row by row; extra slots weigh 0 and copy the first slot."""
    from bayescount.fit_map import MapState, _join_states

    rng = np.random.default_rng(2)

    def state(G, S, seed):
        K = 3
        return MapState(mode=rng.normal(size=(G, S, K)), cov=rng.normal(size=(G, S, K, K)),
                        weights=rng.dirichlet(np.ones(S), size=G), prior_component=rng.integers(0, 5, (G, S)),
                        map_mode=rng.normal(size=(G, K)), map_cov=rng.normal(size=(G, K, K)),
                        mle_mode=rng.normal(size=(G, K)), mle_cov=rng.normal(size=(G, K, K)),
                        hyper={"a0": np.array(seed)}, converged=rng.random(G) > 0.5, n_iter=rng.integers(1, 9, G),
                        loglik=rng.normal(size=G), log_evidence=rng.normal(size=G), names=("a", "b", "c"),
                        re_log_sd=rng.normal(size=(G, S, 1)), n_sweeps=seed, timings={"seed": seed})

    parts = [state(4, 2, 1), state(3, 5, 2), state(5, 3, 3)]
    joined = _join_states(parts, n_threads=2)
    assert joined.mode.shape == (12, 5, 3) and joined.hyper == parts[0].hyper and joined.n_sweeps == 1
    rows = np.cumsum([0, 4, 3, 5])
    for i, p in enumerate(parts):
        sl, S = slice(rows[i], rows[i + 1]), p.mode.shape[1]
        for name in ("mode", "cov", "weights", "prior_component", "re_log_sd"):
            got, own = getattr(joined, name)[sl], getattr(p, name)
            np.testing.assert_array_equal(got[:, :S], own)
            pad = np.zeros_like(got[:, S:]) if name == "weights" else np.repeat(own[:, :1], 5 - S, axis=1)
            np.testing.assert_array_equal(got[:, S:], pad)
        for name in ("map_mode", "map_cov", "mle_mode", "mle_cov", "converged", "n_iter", "loglik", "log_evidence"):
            np.testing.assert_array_equal(getattr(joined, name)[sl], getattr(p, name))
    assert joined.prior_component.dtype == parts[0].prior_component.dtype
