"""Bootstrap CIs, percentiles and seed spread, against values worked out by hand."""

import json
import math
import time

import numpy as np
import pytest

from memory_r1.eval.stats import bootstrap_ci, mean_std, percentiles, summarize


def test_percentiles_of_one_to_four_by_linear_interpolation():
    # positions (n - 1) * q: p50 at 1.5 -> between 2 and 3 = 2.5; p95 at 2.85 -> 3 + 0.85 * (4 - 3) = 3.85
    assert percentiles([1, 2, 3, 4]) == pytest.approx({"p50": 2.5, "p95": 3.85, "mean": 2.5, "n": 4})
    assert percentiles([4, 1, 3, 2]) == percentiles([1, 2, 3, 4])  # order does not matter


def test_percentiles_of_one_value_and_of_none():
    assert percentiles([0.7]) == {"p50": 0.7, "p95": 0.7, "mean": 0.7, "n": 1}
    empty = percentiles([])
    assert empty["n"] == 0 and all(math.isnan(empty[k]) for k in ("p50", "p95", "mean"))


def test_mean_std_uses_the_sample_std():
    # [1, 2, 3, 4]: mean 2.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5; / (n - 1) = 5/3
    assert mean_std([1, 2, 3, 4]) == pytest.approx({"mean": 2.5, "std": math.sqrt(5 / 3), "n": 4})
    assert mean_std([0.4]) == {"mean": 0.4, "std": 0.0, "n": 1}
    empty = mean_std([])
    assert empty["n"] == 0 and math.isnan(empty["mean"]) and math.isnan(empty["std"])


def test_bootstrap_of_constant_values_is_the_constant():
    assert bootstrap_ci([0.1] * 50) == (0.1, 0.1)  # exact: no float noise from averaging 0.1s
    assert bootstrap_ci([0.3]) == (0.3, 0.3)


def test_bootstrap_of_nothing_is_nan():
    lo, hi = bootstrap_ci([])
    assert math.isnan(lo) and math.isnan(hi)


def test_bootstrap_of_two_values_spans_both():
    # Resampling [0, 1] gives means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4: a quarter of the
    # 1,000 resample means are 0 and a quarter are 1, so the 2.5th and 97.5th percentiles are 0 and 1.
    assert bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)


def test_bootstrap_of_a_fair_coin_matches_the_normal_approximation():
    # 200 ones and 200 zeros: mean 0.5, standard error sqrt(0.25 / 400) = 0.025, so the 95% interval is
    # about 0.5 +- 1.96 * 0.025 = 0.5 +- 0.049.
    values = [1.0] * 200 + [0.0] * 200
    lo, hi = bootstrap_ci(values, resamples=2000)
    assert lo == pytest.approx(0.451, abs=0.008)
    assert hi == pytest.approx(0.549, abs=0.008)


def test_bootstrap_contains_the_mean_and_narrows_with_more_questions():
    rng = np.random.default_rng(1)
    small = rng.random(30)
    large = rng.random(1000)
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert lo_s < small.mean() < hi_s
    assert lo_l < large.mean() < hi_l
    assert hi_s - lo_s > 3 * (hi_l - lo_l)  # width ~ 1/sqrt(n): sqrt(1000 / 30) ~ 5.8


def test_bootstrap_level_widens_the_interval():
    values = np.random.default_rng(2).random(200)
    lo90, hi90 = bootstrap_ci(values, level=0.90)
    lo99, hi99 = bootstrap_ci(values, level=0.99)
    assert lo99 < lo90 < hi90 < hi99


def test_bootstrap_is_deterministic_by_seed():
    values = np.random.default_rng(3).random(100)
    assert bootstrap_ci(values, seed=7) == bootstrap_ci(values, seed=7)
    assert bootstrap_ci(values, seed=7) != bootstrap_ci(values, seed=8)


def test_bootstrap_is_fast_for_the_test_split():
    values = np.random.default_rng(4).random(1500)
    start = time.perf_counter()
    bootstrap_ci(values, resamples=1000)
    assert time.perf_counter() - start < 1.0  # ~0.05 s measured; generous for a loaded machine


@pytest.mark.parametrize("kwargs", [{"resamples": 0}, {"level": 1.0}, {"level": 0.0}])
def test_bootstrap_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        bootstrap_ci([0.0, 1.0], **kwargs)


def test_summarize_is_plain_json():
    record = summarize([0.0, 1.0, 1.0, 1.0], seed=5)
    assert record["mean"] == 0.75 and record["n"] == 4
    lo, hi = record["ci95"]
    assert 0.0 <= lo <= 0.75 <= hi <= 1.0
    assert json.loads(json.dumps(record)) == record
    assert all(type(v) is float for v in [record["mean"], lo, hi]) and type(record["n"]) is int
    assert record["ci95"] == list(bootstrap_ci([0.0, 1.0, 1.0, 1.0], seed=5))


def test_summarize_of_nothing():
    record = summarize([])
    assert record["n"] == 0 and math.isnan(record["mean"]) and all(math.isnan(v) for v in record["ci95"])
