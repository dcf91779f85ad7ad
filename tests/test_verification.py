"""Verification arithmetic against straightforward loops, on random and tied scores."""
import json

import numpy as np
import pytest

from retinaface.recognition import verification as V


def brute_best_threshold(scores, issame):
    best_t, best_acc = None, -1.0
    values = sorted(set(scores.tolist()))
    cands = [values[0] - 1.0] + [(a + b) / 2 for a, b in zip(values, values[1:])] + [values[-1] + 1.0]
    for t in cands:
        acc = np.mean((scores >= t) == issame)
        if acc > best_acc + 1e-15:
            best_t, best_acc = t, acc
    return best_t, best_acc


def brute_kfold(scores, issame, k):
    n = len(scores)
    sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
    accs, start = [], 0
    for size in sizes:
        test = np.zeros(n, bool)
        test[start:start + size] = True
        start += size
        t, _ = brute_best_threshold(scores[~test], issame[~test])
        accs.append(np.mean((scores[test] >= t) == issame[test]))
    return np.array(accs)


def brute_tar_at_far(scores, issame, far):
    imp, gen = scores[~issame], scores[issame]
    best = None
    for t in sorted(set(imp.tolist())) + [imp.min() - 1.0]:
        if np.mean(imp > t) <= far:
            tar = np.mean(gen > t)
            best = tar if best is None else max(best, tar)
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kfold_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 203  # folds of unequal size
    issame = rng.random(n) < 0.5
    scores = np.where(issame, rng.normal(0.5, 0.2, n), rng.normal(0.1, 0.2, n))
    scores = np.round(scores, 2)  # ties
    accs, thresholds = V.kfold_accuracy(scores, issame, 10)
    np.testing.assert_allclose(accs, brute_kfold(scores, issame, 10), atol=1e-12)
    assert len(thresholds) == 10
    result = V.evaluate_scores(scores, issame)
    assert result.accuracy == pytest.approx(brute_kfold(scores, issame, 10).mean())
    assert result.accuracy_std == pytest.approx(brute_kfold(scores, issame, 10).std())
    json.dumps(result.to_dict())  # plain types only


def test_threshold_is_chosen_on_the_other_folds():
    # fold 0 prefers a threshold the other nine folds contradict: its test accuracy must suffer
    issame = np.array([True, False] * 50)
    scores = np.where(issame, 0.8, 0.2).astype(float)
    scores[:10] = np.where(issame[:10], 0.1, 0.9)  # fold 0 inverted
    accs, _ = V.kfold_accuracy(scores, issame, 10)
    assert accs[0] == 0.0 and np.all(accs[1:] == 1.0)


@pytest.mark.parametrize("far", [1e-3, 1e-2, 0.1])
def test_tar_at_far_matches_brute_force(far):
    rng = np.random.default_rng(5)
    issame = rng.random(3000) < 0.3
    scores = np.round(np.where(issame, rng.normal(0.6, 0.2, 3000), rng.normal(0.0, 0.2, 3000)), 3)
    got = V.tar_at_far(scores, issame, far)
    assert got.tar == pytest.approx(brute_tar_at_far(scores, issame, far))
    assert got.far <= far
    assert got.exact == ((~issame).sum() * far >= 1)


def test_tar_at_far_too_few_impostors_is_flagged():
    issame = np.array([True] * 5 + [False] * 5)
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.5, 0.4, 0.1, 0.0, -0.1])
    got = V.tar_at_far(scores, issame, 1e-4)
    assert not got.exact and got.far == 0.0 and got.tar == pytest.approx(0.6)


def test_roc_and_auc():
    issame = np.array([True, True, False, False])
    fpr, tpr, _ = V.roc_curve(np.array([0.9, 0.4, 0.5, 0.1]), issame)
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert V.auc(fpr, tpr) == pytest.approx(0.75)  # 3 of 4 genuine/impostor orderings right


def test_bad_inputs():
    with pytest.raises(ValueError, match="labels"):
        V.evaluate_scores(np.zeros(20), np.zeros(19, bool))
    with pytest.raises(ValueError, match="folds"):
        V.kfold_accuracy(np.zeros(5), np.zeros(5, bool), 10)
    with pytest.raises(ValueError, match="NaN"):
        V.evaluate_scores(np.full(20, np.nan), np.zeros(20, bool))


def test_plot_roc_writes_png(tmp_path):
    fpr, tpr, _ = V.roc_curve(np.array([0.9, 0.4, 0.5, 0.1]), np.array([True, True, False, False]))
    V.plot_roc({"model": (fpr, tpr)}, tmp_path / "roc.png")
    assert (tmp_path / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_given_folds_replace_the_contiguous_split():
    rng = np.random.default_rng(3)
    issame = rng.random(100) < 0.5
    scores = np.where(issame, rng.normal(0.4, 0.3, 100), rng.normal(0.0, 0.3, 100))
    contiguous = np.repeat(np.arange(10), 10)
    np.testing.assert_array_equal(V.kfold_accuracy(scores, issame, 10, contiguous)[0],
                                  V.kfold_accuracy(scores, issame, 10)[0])
    interleaved = np.tile(np.arange(10), 10)  # fold k = pairs k, k+10, ...
    accs, _ = V.kfold_accuracy(scores, issame, 10, interleaved)
    order = np.argsort(interleaved, kind="stable")
    np.testing.assert_allclose(accs, brute_kfold(scores[order], issame[order], 10))
