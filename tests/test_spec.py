"""The template catalog: validation, overrides, hashing, packaging."""

from pathlib import Path

import pytest

import bayescount as bc
from bayescount.spec import catalog_dir


def test_catalog_lists_templates():
    assert {"nb_trend", "poisson", "nb"} <= set(bc.list_templates())


def test_catalog_ships_inside_the_package():
    pkg = Path(bc.__file__).parent
    if "site-packages" in str(pkg):
        assert catalog_dir() == pkg / "_models"


def test_every_error_reported_at_once():
    with pytest.raises(bc.SpecError) as exc:
        bc.load_spec("nb_trend", {"dispersion": {"bogus": 1, "sigma_d_sigma": -1.0}, "extra": {}})
    msg = str(exc.value)
    assert "bogus" in msg and "sigma_d_sigma must be > 0" in msg and "'extra' is unknown" in msg


def test_spec_file_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nfoo = 1\n[likelihood]\npart = "gamma"\n[intercept]\npart = "normal"\nsigma = "wide"\n')
    with pytest.raises(bc.SpecError) as exc:
        bc.load_spec(str(bad))
    msg = str(exc.value)
    for words in ("unknown top-level key 'foo'", "'gamma' is not registered", "must be a finite number", "[coefficients]"):
        assert words in msg
    with pytest.raises(bc.SpecError, match="unknown template"):
        bc.load_spec("no_such_template")


def test_overrides_change_the_hash_and_defaults_are_filled():
    base = bc.load_spec("nb_trend")
    tuned = bc.load_spec("nb_trend", {"coefficients": {"null_weight": 5.0}})
    assert tuned.coefficients.null_weight == 5.0 and base.coefficients.null_weight == 10.0
    assert tuned.hash != base.hash
    assert bc.load_spec("nb_trend").hash == base.hash
    assert set(base.parts["dispersion"]) == {"part", "log_a0_mu", "log_a0_sigma", "log_a1_mu", "log_a1_sigma", "sigma_d_sigma",
                                               "level_shift_sigma"}


def test_poisson_rejects_dispersion_section():
    with pytest.raises(bc.SpecError, match="not used by likelihood 'poisson'"):
        bc.load_spec("poisson", {"dispersion": {"part": "trend"}})


def test_no_intercept_design_is_refused_for_shrinkage_templates():
    sim = bc.simulate(n_genes=50, n_per_group=3, random_seed=1)
    data = bc.CountData.from_pandas(sim.counts, sim.samples, design="~ 0 + group")
    with pytest.raises(bc.InputError, match="no intercept"):
        bc.fit(data, method="map", random_seed=1)
