"""Significance of a table's comparisons: paired tests on per-query scores against a baseline, Holm-corrected
across the table's rows.

Two paired, two-sided tests on the per-query differences ``d = system - baseline`` (the same queries, in the same
order, for both):

- ``"t"``: the paired Student's t-test, :func:`scipy.stats.ttest_rel` (ranx's ``stat_test="student"``,
  PyTerrier's ``Experiment(test="t")``);
- ``"permutation"``: the paired randomization test (Fisher's; ranx's ``stat_test="fisher"``, Smucker et al.,
  CIKM 2007): under the null hypothesis each query's two scores are exchangeable, so each difference keeps or flips
  its sign. The p-value is the share of sign assignments whose ``|mean(d)|`` reaches the observed one: every
  assignment when there are at most ``permutations`` of them (exact; queries with ``d = 0`` flip nothing and are
  left out), else ``permutations`` seeded random ones, counted as ``(hits + 1) / (permutations + 1)`` so the
  estimate is never 0.

With several systems against one baseline the p-values of one metric are corrected together (:func:`holm`,
Holm-Bonferroni, PyTerrier's ``correction="holm"``): one family per metric column, as PyTerrier does.

>>> round(paired_p_value([0.5, 0.7, 0.9, 0.6], [0.4, 0.5, 0.6, 0.6], "t"), 4)
0.1027
>>> paired_p_value([0.5, 0.7, 0.9, 0.6], [0.4, 0.5, 0.6, 0.6], "permutation")  # 3 non-zero d: 2 of 8 reach it
0.25
>>> holm([0.01, 0.04, 0.03])
[0.03, 0.06, 0.06]
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from searchkit.evaluate.metrics import Evaluation, canonical_metric
from searchkit.types import ConfigError, DataError

TESTS = ("t", "permutation")


PERMUTATIONS = 10_000


SEED = 42


def paired_t_test(system: Sequence[float], baseline: Sequence[float]) -> float:
    """Two-sided p-value of the paired t-test (:func:`scipy.stats.ttest_rel`); 1.0 when every difference is 0.

    >>> paired_t_test([1.0, 0.5], [1.0, 0.5])
    1.0
    """
    from scipy.stats import ttest_rel

    a, b = _pair(system, baseline)
    diff = a - b
    if not np.any(diff):
        return 1.0
    if np.all(diff == diff[0]):  # every query moves by the same amount: no variance, as certain as it gets
        return 0.0
    with warnings.catch_warnings():  # scipy warns of precision loss when the differences are nearly constant
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(ttest_rel(a, b, alternative="two-sided").pvalue)


def permutation_test(
    system: Sequence[float], baseline: Sequence[float], *, permutations: int = PERMUTATIONS, seed: int = SEED
) -> float:
    """Two-sided p-value of the paired randomization (sign-flip) test: exact when ``2 ** n`` (n = queries whose
    scores differ) is at most ``permutations``, else ``permutations`` sign assignments drawn with ``seed``.

    >>> permutation_test([0.3, 0.6], [0.1, 0.2])  # both signs flipped or kept: 2 of 4 assignments reach |0.3|
    0.5
    """
    if permutations < 1:
        raise ConfigError(f"permutations must be >= 1, got {permutations}")
    a, b = _pair(system, baseline)
    diff = a - b
    diff = diff[diff != 0]
    n = len(diff)
    if n == 0:
        return 1.0
    observed = abs(diff.sum())
    slack = 1e-9 * max(1.0, float(np.abs(diff).sum()))  # an assignment equal to the observed one counts
    if 2**n <= permutations:
        hits = 0
        bits = np.arange(n)
        for start in range(0, 2**n, 1 << 16):  # every assignment, in chunks of 65,536
            codes = np.arange(start, min(2**n, start + (1 << 16)))[:, None]
            signs = 1 - 2 * ((codes >> bits) & 1)
            hits += int(np.count_nonzero(np.abs(signs @ diff) >= observed - slack))
        return hits / 2**n
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, permutations, 4096):
        size = min(4096, permutations - start)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(size, n))
        hits += int(np.count_nonzero(np.abs(signs @ diff) >= observed - slack))
    return (hits + 1) / (permutations + 1)


def paired_p_value(
    system: Sequence[float],
    baseline: Sequence[float],
    test: str = "t",
    *,
    permutations: int = PERMUTATIONS,
    seed: int = SEED,
) -> float:
    """The two-sided p-value of ``test`` (``"t"`` or ``"permutation"``) for paired per-query scores."""
    if test == "t":
        return paired_t_test(system, baseline)
    if test == "permutation":
        return permutation_test(system, baseline, permutations=permutations, seed=seed)
    raise ConfigError(f"significance test must be one of {', '.join(TESTS)}, got {test!r}")


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given: the i-th smallest of m is multiplied by ``m - i``
    (i from 0), made non-decreasing in that order, capped at 1. NaN stays NaN and is not counted in m.

    >>> holm([0.02, float("nan"), 0.5])
    [0.04, nan, 0.5]
    """
    order = sorted((i for i, p in enumerate(p_values) if not math.isnan(p)), key=lambda i: p_values[i])
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class Significance:
    """Each system against ``baseline``: ``p[system][metric]`` Holm-corrected across the systems (one family per
    metric), ``raw`` before correction, over ``queries`` paired queries."""

    baseline: str
    test: str
    queries: int
    p: dict[str, dict[str, float]] = field(default_factory=dict)
    raw: dict[str, dict[str, float]] = field(default_factory=dict)
    correction: str = "holm"
    permutations: int | None = None
    seed: int | None = None

    def describe(self) -> str:
        """One line saying what the p-values are, for under a table."""
        test = "paired t-test" if self.test == "t" else "paired randomization test"
        if self.test == "permutation":
            test += f" ({self.permutations} sign flips at most, seed {self.seed})"
        others = len(self.p)
        return (
            f"p: two-sided {test} against {self.baseline} over {self.queries} queries, Holm-corrected across "
            f"the {others} other {'run' if others == 1 else 'runs'} per metric"
        )


def compare_to_baseline(
    evaluations: Mapping[str, Evaluation],
    baseline: str,
    metrics: Sequence[str],
    test: str = "t",
    *,
    permutations: int = PERMUTATIONS,
    seed: int = SEED,
) -> Significance:
    """Test every evaluation of ``evaluations`` against ``evaluations[baseline]`` on each metric, per query, and
    Holm-correct each metric's p-values across the systems. Every evaluation must hold the baseline's queries
    (score runs with the same ``query_ids``/qrels); otherwise a DataError names the run.

    >>> from searchkit.evaluate.metrics import evaluate
    >>> from searchkit.types import Hit
    >>> qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1}}
    >>> good = {q: [Hit(f"d{q[1]}", 1.0)] for q in qrels}
    >>> bad = {q: [Hit("d9", 2.0), Hit(f"d{q[1]}", 1.0)] for q in qrels}
    >>> runs = {"bad": evaluate(bad, qrels, ["RR@10"]), "good": evaluate(good, qrels, ["RR@10"])}
    >>> compare_to_baseline(runs, "bad", ["RR@10"], "permutation").p
    {'good': {'RR@10': 0.25}}
    """
    if test not in TESTS:
        raise ConfigError(f"significance test must be one of {', '.join(TESTS)}, got {test!r}")
    if baseline not in evaluations:
        raise ConfigError(f"baseline {baseline!r} is not one of the runs compared: {', '.join(evaluations)}")
    keys = [canonical_metric(metric) for metric in metrics]
    base = evaluations[baseline]
    ids = sorted(base.per_query)
    raw: dict[str, dict[str, float]] = {}
    for name, evaluation in evaluations.items():
        if name == baseline:
            continue
        if set(evaluation.per_query) != set(ids):
            extra = sorted(set(evaluation.per_query) ^ set(ids))
            raise DataError(
                f"{name} and the baseline {baseline} are not scored on the same queries ({len(extra)} differ, e.g. "
                f"{extra[0]!r}): a paired test needs the same query set"
            )
        raw[name] = {}
        for key in keys:
            system = [evaluation.per_query[q][key] for q in ids]
            control = [base.per_query[q][key] for q in ids]
            raw[name][key] = paired_p_value(system, control, test, permutations=permutations, seed=seed)
    corrected: dict[str, dict[str, float]] = {name: {} for name in raw}
    for key in keys:
        names = list(raw)
        for name, value in zip(names, holm([raw[n][key] for n in names]), strict=True):
            corrected[name][key] = value
    chance = test == "permutation"
    return Significance(
        baseline, test, len(ids), corrected, raw, permutations=permutations if chance else None,
        seed=seed if chance else None,
    )  # fmt: skip


def _pair(system: Sequence[float], baseline: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(system, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise DataError(f"paired scores must be two equal-length lists, got {a.shape} and {b.shape}")
    if len(a) < 2:
        raise DataError(f"a paired test needs at least 2 queries, got {len(a)}")
    return a, b
