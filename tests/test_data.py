"""Every bad input gets its one-line message; data-layer facts."""

import numpy as np
import pandas as pd
import pytest

import bayescount as bc
from bayescount.data import compute_size_factors


def frames(n_genes=6):
    rng = np.random.default_rng(0)
    counts = pd.DataFrame(rng.poisson(20, (n_genes, 6)), index=[f"g{i}" for i in range(n_genes)],
                          columns=[f"s{j}" for j in range(6)])
    samples = pd.DataFrame({"group": list("AAABBB"), "batch": list("xyxyxy")}, index=counts.columns)
    return counts, samples


def make(counts, samples, design="~ group", **kw):
    return bc.CountData.from_pandas(counts, samples, design=design, **kw)


BAD_COUNTS = [
    ("negative", lambda c: c.iloc.__setitem__((0, 0), -1), "negative"),
    ("non-integer", lambda c: c.iloc.__setitem__((1, 2), 2.5), "non-integer"),
    ("nan", lambda c: c.iloc.__setitem__((2, 3), np.nan), "NaN"),
    ("inf", lambda c: c.iloc.__setitem__((2, 3), np.inf), "infinite"),
]


@pytest.mark.parametrize("name,mutate,words", BAD_COUNTS, ids=[b[0] for b in BAD_COUNTS])
def test_bad_count_values(name, mutate, words):
    counts, samples = frames()
    counts = counts.astype(float)
    mutate(counts)
    with pytest.raises(bc.InputError, match=words) as exc:
        make(counts, samples)
    assert "\n" not in str(exc.value)
    assert "gene" in str(exc.value)  # it says where


def test_sample_id_problems():
    counts, samples = frames()
    dup = counts.copy()
    dup.columns = ["s0", "s0", "s2", "s3", "s4", "s5"]
    with pytest.raises(bc.InputError, match="duplicated in the count columns"):
        make(dup, samples)
    with pytest.raises(bc.InputError, match="duplicated in the sample table"):
        make(counts, pd.concat([samples, samples.iloc[[0]]]))
    with pytest.raises(bc.InputError, match=r"\['s5'\] are in the counts but not in the sample table"):
        make(counts, samples.iloc[:5])
    extra = pd.concat([samples, pd.DataFrame({"group": ["A"], "batch": ["x"]}, index=["s9"])])
    with pytest.raises(bc.InputError, match=r"\['s9'\] are in the sample table but not in the counts"):
        make(counts, extra)
    # Several missing and extra ids: the first ones are named in count (or table) order.
    renamed = samples.rename(index={"s1": "t1", "s4": "t4"})
    with pytest.raises(bc.InputError, match=r"\['s1', 's4'\] are in the counts but not in the sample table"):
        make(counts, renamed)
    with pytest.raises(bc.InputError, match=r"\['t1', 't4'\] are in the sample table but not in the counts"):
        make(counts.drop(columns=["s1", "s4"]), renamed)
    dupg = counts.copy()
    dupg.index = ["g0", "g0", "g2", "g3", "g4", "g5"]
    with pytest.raises(bc.InputError, match="gene ids duplicated"):
        make(dupg, samples)


def test_design_problems():
    counts, samples = frames()
    samples = samples.assign(group2=samples.group.map({"A": "u", "B": "v"}))
    with pytest.raises(bc.InputError, match=r"not full rank.*group2\[T.v\]"):
        make(counts, samples, design="~ group + group2")
    with pytest.raises(bc.InputError, match="not columns of the sample table"):
        make(counts, samples, design="~ condition")
    lv = samples.copy()
    lv["group"] = pd.Categorical(lv.group, categories=["A", "B", "C"])
    with pytest.raises(bc.InputError, match=r"levels with no samples: \['C'\]"):
        make(counts, lv)
    with pytest.raises(bc.InputError, match="empty"):
        make(counts, samples, design="  ")


def test_empty_and_all_zero():
    counts, samples = frames()
    with pytest.raises(bc.InputError, match="empty"):
        make(counts.iloc[:0], samples)
    with pytest.raises(bc.InputError, match="zero counts in every sample"):
        make(counts * 0, samples)
    counts.iloc[1] = 0
    counts.iloc[2, 3:] = 0
    d = make(counts, samples, size_factors="none")
    assert d.n_dropped_zero == 1 and d.n_genes == 5 and "g1" not in d.genes
    assert d.flags[list(d.genes).index("g2")] == "all_zero_in:group=B"
    assert (d.flags != "").sum() == 1


def test_size_factors():
    base = np.array([[10, 20, 40], [30, 60, 120], [5, 10, 20]])
    sf = compute_size_factors(base)
    np.testing.assert_allclose(sf / sf[0], [1, 2, 4])
    assert np.exp(np.mean(np.log(sf))) == pytest.approx(1.0)
    zero = base.copy()
    zero[:, 0] = [0, 30, 5]
    zero[0, 1] = 0
    zero[1, 2] = 0
    zero[2, 1] = 0
    with pytest.raises(bc.InputError, match="poscounts"):
        compute_size_factors(np.array([[0, 1], [1, 0]]))
    pc = compute_size_factors(np.array([[0, 10, 20], [5, 0, 20], [5, 10, 0], [5, 10, 20]]), "poscounts")
    assert np.all(np.isfinite(pc)) and pc[2] > pc[1] > pc[0]
    with pytest.raises(bc.InputError, match="positive finite"):
        compute_size_factors(base, [1.0, -1.0, 1.0])


def test_zero_level_gene_gets_finite_flagged_lfc():
    sim = bc.simulate(n_genes=200, n_per_group=3, random_seed=5)
    counts = sim.counts.copy()
    counts.iloc[0, 3:] = 0  # no counts in group B
    res = bc.fit(bc.CountData.from_pandas(counts, sim.samples, "~ group"), method="map", random_seed=1)
    row = res.lfc().set_index("gene").loc[counts.index[0]]
    assert np.isfinite(row.log2fc) and np.isfinite(row.log2fc_sd) and row.log2fc < 0
    assert "all_zero_in:group=B" in row.flag


def test_csv_and_tsv_round_trip(tmp_path):
    counts, samples = frames()
    counts.to_csv(tmp_path / "c.tsv", sep="\t", index_label="gene")
    samples.to_csv(tmp_path / "s.csv", index_label="sample")
    d = bc.CountData.from_csv(tmp_path / "c.tsv", tmp_path / "s.csv", design="~ batch + group")
    assert d.design.coef == ("Intercept", "batch[T.y]", "group[T.B]")
    np.testing.assert_array_equal(d.counts, counts.to_numpy())
    with pytest.raises(bc.InputError, match="does not exist"):
        bc.CountData.from_csv(tmp_path / "nope.csv", tmp_path / "s.csv")


def test_sample_table_rows_follow_the_count_columns():
    """The sample table may list the samples in any order (and with integer ids): rows are matched by id."""
    counts, samples = frames()
    shuffled = samples.iloc[[3, 0, 5, 1, 4, 2]]
    data = make(counts, shuffled)
    assert list(data.samples.index) == list(counts.columns)
    assert list(data.samples["group"]) == list("AAABBB")
    np.testing.assert_array_equal(data.design.matrix[:, 1], [0, 0, 0, 1, 1, 1])
    ints = make(counts.set_axis(range(10, 16), axis=1), samples.set_axis(range(10, 16)).iloc[::-1])
    assert list(ints.samples["group"]) == list("AAABBB")


@pytest.mark.parametrize("formula", ["~ group", "~ batch + group", "~ dose + group", "~ cond + group",
                                     "~ group * batch", "~ group:batch", "~ 0 + group", "~ C(group, Sum)"])
def test_factor_contrasts_are_the_averaged_counterfactual_rows(formula):
    """[factor, level, reference] is the mean difference of the design rows with every sample set to
    each level; main effects read it off the coefficient names, other terms go through the rows."""
    import itertools

    from bayescount.design import build_design

    rng = np.random.default_rng(0)
    s = pd.DataFrame({"group": list("ABCABCABCABC"), "batch": list("xxyyxxyyxxyy"), "dose": rng.normal(size=12),
                      "cond": pd.Categorical(list("ttccttccttcc"), categories=["t", "c"])},
                     index=[f"s{i}" for i in range(12)])
    d = build_design(formula, s)
    for factor, levels in d.factors.items():
        for a, b in itertools.permutations(levels, 2):
            rows = []
            for lv in (a, b):
                cf = s.copy()
                cf[factor] = pd.Categorical([lv] * len(cf), categories=list(levels))
                rows.append(np.asarray(d.model_spec.get_model_matrix(cf), dtype=float).mean(axis=0))
            vec, label = d.contrast_vector([factor, a, b], s)
            np.testing.assert_allclose(vec, rows[0] - rows[1], atol=1e-12)
            assert label == f"{factor}: {a} vs {b}"
