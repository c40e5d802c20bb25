"""Exact log-density checks against scipy, and the MAP derivatives against finite differences."""

import numpy as np
import pytest
from scipy import stats

import bayescount as bc
from bayescount.newton import GeneProblem as _Problem
from bayescount.model import layout
from conftest import assert_held_derivatives_match


@pytest.fixture(scope="module")
def small():
    return bc.simulate(n_genes=30, n_per_group=4, random_seed=11).data


def _random_point(model, rng):
    point = model.initial_point()
    return {k: v + rng.normal(0, 0.5, size=np.shape(v)) for k, v in point.items()}


@pytest.mark.parametrize("template", ["nb_trend", "poisson"])
def test_model_likelihood_equals_scipy(small, template):
    model = bc.build_model(bc.load_spec(template), small)
    rng = np.random.default_rng(0)
    dets = [model["beta"]] + ([model["dispersion"]] if template == "nb_trend" else [])
    outs = [model.logp(vars=[model["counts"]]), *model.replace_rvs_by_values(dets)]
    fn = model.compile_fn(outs, inputs=model.value_vars, on_unused_input="ignore", point_fn=True)
    for _ in range(3):
        point = _random_point(model, rng)
        logp, beta, *rest = fn(point)
        mu = np.exp(small.offset[None, :] + beta @ small.design.matrix.T)
        if template == "nb_trend":
            size = 1.0 / rest[0][:, None]
            ref = stats.nbinom.logpmf(small.counts, size, size / (size + mu)).sum()
        else:
            ref = stats.poisson.logpmf(small.counts, mu).sum()
        assert logp == pytest.approx(ref, rel=1e-10, abs=1e-8)


def test_full_model_logp_equals_scipy(small):
    """Every term of nb_trend with a normal LFC prior (priors, hyperpriors with Jacobians, likelihood)."""
    spec = bc.load_spec("nb_trend", {"coefficients": {"part": "normal_learned_scale"}})
    model = bc.build_model(spec, small)
    point = _random_point(model, np.random.default_rng(1))
    logp = model.compile_logp()(point)
    a0, a1, sd, tau = (np.exp(point[f"{n}_log__"]) for n in ("a0", "a1", "sigma_d", "tau"))
    d = spec.dispersion
    ref = (
        stats.lognorm.logpdf(a0, d.log_a0_sigma, scale=np.exp(d.log_a0_mu)) + np.log(a0)
        + stats.lognorm.logpdf(a1, d.log_a1_sigma, scale=np.exp(d.log_a1_mu)) + np.log(a1)
        + stats.halfnorm.logpdf(sd, scale=d.sigma_d_sigma) + np.log(sd)
        + (stats.halfnorm.logpdf(tau, scale=spec.coefficients.tau_sigma) + np.log(tau)).sum()
        + stats.norm.logpdf(point["beta_z"]).sum() + stats.norm.logpdf(point["log_dispersion_z"]).sum()
    )
    beta = point["beta_z"] * np.array([spec.intercept.sigma, tau[0]])
    logdisp = np.log(a0 + a1 / small.base_mean) + sd * point["log_dispersion_z"]
    mu = np.exp(small.offset[None, :] + beta @ small.design.matrix.T)
    size = np.exp(-logdisp)[:, None]
    ref += stats.nbinom.logpmf(small.counts, size, size / (size + mu)).sum()
    assert logp == pytest.approx(ref, rel=1e-10)


def test_scale_mixture_prior_equals_scipy(small):
    """The default LFC prior: sum_g log sum_k pi_k prod_j N(beta_gj; 0, sigma_k), and its Dirichlet."""
    from scipy.special import logsumexp

    spec = bc.load_spec("nb_trend")
    model = bc.build_model(spec, small)
    rng = np.random.default_rng(3)
    point = _random_point(model, rng)
    outs = model.replace_rvs_by_values([model.potentials[0], model["pi"]])
    fn = model.compile_fn(outs, inputs=model.value_vars, on_unused_input="ignore", point_fn=True)
    pot, pi = fn(point)
    grid = spec.coefficients.grid()
    slopes = point["beta_slope"]
    comp = stats.norm.logpdf(slopes[:, :, None], 0.0, grid[None, None, :]).sum(axis=1)
    assert pot == pytest.approx(logsumexp(np.log(pi)[None, :] + comp, axis=1).sum(), rel=1e-10)
    assert pi.sum() == pytest.approx(1.0)
    pi_lp = model.compile_fn(model.logp(vars=[model["pi"]], jacobian=False), inputs=model.value_vars,
                             on_unused_input="ignore", point_fn=True)(point)
    assert pi_lp == pytest.approx(stats.dirichlet.logpdf(pi, spec.coefficients.concentration()), rel=1e-10)


def test_map_kernel_matches_scipy_and_finite_differences(small):
    spec = bc.load_spec("nb_trend")
    lay = layout(spec, small)
    prob = _Problem(spec, small, lay)
    rng = np.random.default_rng(2)
    rows = np.arange(small.n_genes)
    theta = np.column_stack([np.log(small.base_mean + 1), rng.normal(0, 0.5, small.n_genes), rng.normal(-2, 0.5, small.n_genes)])
    loc = np.zeros_like(theta)
    scale = np.full_like(theta, 2.0)
    mu = np.exp(small.offset[None, :] + theta[:, :2] @ small.design.matrix.T)
    size = np.exp(-theta[:, 2])[:, None]
    ref = stats.nbinom.logpmf(small.counts, size, size / (size + mu)).sum(axis=1)
    np.testing.assert_allclose(prob.loglik(theta, rows), ref, rtol=1e-11)
    f0, g, H = prob.derivs(theta, rows, loc, scale)
    eps = 1e-5
    for k in range(3):
        e = np.zeros(3)
        e[k] = eps
        fp = prob.logpost(theta + e, rows, loc, scale)
        fm = prob.logpost(theta - e, rows, loc, scale)
        np.testing.assert_allclose(g[:, k], (fp - fm) / (2 * eps), rtol=1e-5, atol=1e-5)
        _, gp, _ = prob.derivs(theta + e, rows, loc, scale)
        _, gm, _ = prob.derivs(theta - e, rows, loc, scale)
        np.testing.assert_allclose(H[:, :, k], (gp - gm) / (2 * eps), rtol=1e-5, atol=1e-4)
    assert_held_derivatives_match(prob, theta)


def test_trigamma_kernel_accuracy():
    import pytensor
    import pytensor.tensor as pt
    from scipy.special import polygamma

    import bayescount._kernels  # noqa: F401

    x = pt.dvector()
    f = pytensor.function([x], pt.tri_gamma(x), mode="NUMBA")
    v = np.array([1e-4, 0.01, 0.3, 1.0, 2.5, 9.99, 10.0, 57.0, 1e5])
    np.testing.assert_allclose(f(v), polygamma(1, v), rtol=1e-11)


@pytest.mark.parametrize("mode", ["NUMBA", "FAST_RUN"])
def test_rising_factorial_ops_equal_exact_sums(mode):
    """``lgamma(y + r) - lgamma(r)`` and its two r-derivatives against exact finite sums, in every branch
    (short products, special functions, Stirling differences for near-Poisson r), numba and C alike."""
    import math

    import pytensor
    import pytensor.tensor as pt

    from bayescount._kernels import digamma_rising, log_rising, trigamma_rising

    ys = [0, 1, 2, 7, 16, 17, 60, 1000, 20000]
    rs = [1e-3, 0.07, 1.0, 3.3, 250.0, 9999.0, 1e4, 3e6, 1e9, 1e12]
    Y, R = (a.ravel() for a in np.meshgrid(np.array(ys, float), np.array(rs)))
    y, r = pt.dvector(), pt.dvector()
    f = pytensor.function([y, r], [log_rising(y, r), digamma_rising(y, r), trigamma_rising(y, r)], mode=mode)
    got = f(Y, R)
    refs = [[math.fsum(math.log(b + j) for j in range(int(a))) for a, b in zip(Y, R)],
            [math.fsum(1.0 / (b + j) for j in range(int(a))) for a, b in zip(Y, R)],
            [-math.fsum(1.0 / (b + j) ** 2 for j in range(int(a))) for a, b in zip(Y, R)]]
    for g, ref, name in zip(got, refs, ("log", "digamma", "trigamma")):
        np.testing.assert_allclose(g, ref, rtol=1e-10, atol=1e-300, err_msg=name)


def test_kernel_logp_equals_scipy_at_extremes():
    """The MAP kernels' own NB and ZINB log-densities (``kernel_logp``) against scipy, from zeros to
    large counts and from heavy overdispersion to the Poisson limit."""
    import pytensor
    import pytensor.tensor as pt

    y = np.array([0, 0, 1, 3, 16, 17, 250, 4000, 0, 5, 120, 2])
    eta = np.array([-3.0, 2.0, 0.5, 1.0, 2.7, 2.9, 5.5, 8.3, 9.0, 1.5, 4.8, -1.0])
    log_disp = np.array([-1.0, 2.0, -0.5, -20.0, -3.0, -12.0, -1.5, -5.5, -0.3, 1.5, -25.0, -2.0])
    logit_zero = np.linspace(-4.0, 3.0, y.size)
    mu, disp = np.exp(eta), np.exp(log_disp)
    size = 1.0 / disp
    import math

    # Exact sums for the rising factorial and log1p for the rest: scipy's nbinom cancels near the
    # Poisson limit (its error passes 1e-11 from size 1e5 on), so it checks the reference only where it is itself exact.
    nb_ref = np.array([math.fsum(math.log(n + j) for j in range(int(k))) - math.lgamma(k + 1.0)
                       - n * math.log1p(a * m) + k * (math.log(a * m) - math.log1p(a * m))
                       for k, m, a, n in zip(y, mu, disp, size)])
    ok = size < 1e4
    np.testing.assert_allclose(stats.nbinom.logpmf(y, size, size / (size + mu))[ok], nb_ref[ok], rtol=1e-11)
    pi = 1.0 / (1.0 + np.exp(-logit_zero))
    zinb_ref = np.where(y == 0, np.log(pi + (1 - pi) * np.exp(nb_ref)), np.log1p(-pi) + nb_ref)
    yv, ev, dv, zv = pt.dvector(), pt.dvector(), pt.dvector(), pt.dvector()
    for name, ref, params in (("nb_trend", nb_ref, {"log_dispersion": dv}),
                              ("zinb_trend", zinb_ref, {"log_dispersion": dv, "logit_zero": zv})):
        lik = bc.load_spec(name).likelihood
        f = pytensor.function([yv, ev, dv, zv], lik.kernel_logp(yv, ev, params), mode="NUMBA", on_unused_input="ignore")
        np.testing.assert_allclose(f(y.astype(float), eta, log_disp, logit_zero), ref, rtol=1e-10, err_msg=name)
        split = lik.kernel_logp_split(yv, ev, params)
        if split is not None:
            # The eta-free part computed once per dispersion node must add back to the density.
            h = pytensor.function([yv, ev, dv, zv], [split[0] + split[1], split[1]], mode="NUMBA",
                                  on_unused_input="ignore")
            total, normalizer = h(y.astype(float), eta, log_disp, logit_zero)
            np.testing.assert_allclose(total, ref, rtol=1e-10, err_msg=name)
            np.testing.assert_allclose(h(y.astype(float), eta + 1.0, log_disp, logit_zero)[1], normalizer, rtol=0)
        # and the PyMC distribution the model uses agrees where it is exact
        import pymc as pm

        lp = pm.logp(lik.dist(ev, params), yv)
        g = pytensor.function([yv, ev, dv, zv], lp, on_unused_input="ignore")
        np.testing.assert_allclose(g(y.astype(float), eta, log_disp, logit_zero)[ok], ref[ok], rtol=1e-9, err_msg=name)
