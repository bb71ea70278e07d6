"""River model construction: the one place that builds classifiers.

A model is named in config by a short name or by the dotted import path of any River classifier,
with keyword parameters. Unknown names, non-classifiers and bad parameters fail at start.

>>> model = build_model("hoeffding_tree")
>>> model.predict_proba_one({"x": 1.0})   # cold start: no class seen yet
{}
>>> model.learn_one({"x": 1.0}, "fraud"); model.learn_one({"x": -1.0}, "legit")
>>> sorted(model.predict_proba_one({"x": 1.0}))
['fraud', 'legit']
>>> build_model("river.naive_bayes.GaussianNB").__class__.__name__
'GaussianNB'
>>> build_model("svm")
Traceback (most recent call last):
...
ValueError: unknown model 'svm': use one of adaptive_random_forest, gaussian_nb, half_space_trees, hoeffding_adaptive_tree, hoeffding_tree, logistic_regression, or a dotted path such as 'river.tree.HoeffdingTreeClassifier'
"""

from __future__ import annotations

import heapq
import importlib
from operator import itemgetter
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from river import anomaly, base, compose, forest, linear_model, multiclass, naive_bayes, optim, preprocessing, tree


class BinaryLabels(base.Wrapper, base.Classifier):
    """Lets a River binary classifier (``True``/``False`` targets) learn two named classes.

    >>> model = BinaryLabels(linear_model.LogisticRegression(), negative="legit", positive="fraud")
    >>> model.learn_one({"x": 1.0}, "fraud")
    >>> model.predict_proba_one({"x": 1.0})
    {'legit': 0.49750002083312506, 'fraud': 0.5024999791668749}
    """

    def __init__(self, classifier: base.Classifier, negative: str, positive: str):
        self.classifier = classifier
        self.negative = negative
        self.positive = positive

    @property
    def _wrapped_model(self) -> base.Classifier:
        return self.classifier

    @property
    def _multiclass(self) -> bool:
        return False

    def learn_one(self, x: dict, y: Any, **kwargs: Any) -> None:
        self.classifier.learn_one(x, y == self.positive, **kwargs)

    def predict_proba_one(self, x: dict, **kwargs: Any) -> dict[str, float]:
        proba = self.classifier.predict_proba_one(x, **kwargs)
        if not proba:
            return {}
        p = proba.get(True, 0.0)
        return {self.negative: 1.0 - p, self.positive: p}


class AnomalyScores(base.Classifier):
    """An unsupervised River anomaly detector (``score_one``) as a two-class model.

    ``p(positive)`` is the detector's anomaly score in [0, 1]; the ``anomaly`` sampling strategy
    sends the highest scores to the review queue. It learns from the label log like every model (so
    replicas agree, DESIGN §3): the features of events labelled negative teach it what normal is;
    a positive label teaches it nothing.

    >>> model = AnomalyScores(anomaly.HalfSpaceTrees(window_size=2, seed=0), "legit", "fraud")
    >>> model.predict_proba_one({"x": 0.5})  # nothing learned yet
    {'legit': 1.0, 'fraud': 0.0}
    >>> for v in (0.1, 0.2, 0.15, 0.12):
    ...     model.learn_one({"x": v}, "legit")
    >>> model.score_one({"x": 0.9}) > model.score_one({"x": 0.15})
    True
    """

    def __init__(self, detector: anomaly.base.AnomalyDetector | compose.Pipeline, negative: str, positive: str):
        self.detector = detector
        self.negative = negative
        self.positive = positive

    @property
    def _multiclass(self) -> bool:
        return False

    def learn_one(self, x: dict, y: Any, **kwargs: Any) -> None:
        if y == self.negative:
            self.detector.learn_one(x)

    def score_one(self, x: dict) -> float:
        return min(1.0, max(0.0, float(self.detector.score_one(x))))

    def predict_proba_one(self, x: dict, **kwargs: Any) -> dict[str, float]:
        score = self.score_one(x)
        return {self.negative: 1.0 - score, self.positive: score}


def _half_space_trees(params: dict[str, Any], classes: Sequence[str]) -> base.Classifier:
    """HalfSpaceTrees on min-max scaled features (it expects [0, 1]); a window of 50 normal labels by
    default, since it learns only from labelled events (River's default of 250 would wait long)."""
    if len(classes) != 2:
        raise ValueError(f"model 'half_space_trees' scores anomalies: configure exactly two classes, not {list(classes)}")
    detector = anomaly.HalfSpaceTrees(**{"seed": 0, "window_size": 50, **params})
    return AnomalyScores(compose.Pipeline(preprocessing.MinMaxScaler(), detector), classes[0], classes[1])


def _logistic_regression(params: dict[str, Any], classes: Sequence[str]) -> base.Classifier:
    """Scaled logistic regression: binary for two classes, one-vs-rest for more."""
    params = dict(params)
    learning_rate = params.pop("learning_rate", 0.05)
    params.setdefault("optimizer", optim.SGD(learning_rate))
    regression = linear_model.LogisticRegression(**params)
    if len(classes) == 2:
        # Half the cost of one-vs-rest's two models, and the same probabilities up to calibration.
        return compose.Pipeline(preprocessing.StandardScaler(), BinaryLabels(regression, classes[0], classes[1]))
    return compose.Pipeline(preprocessing.StandardScaler(), multiclass.OneVsRestClassifier(regression))


def _seeded(factory: Callable[..., base.Classifier]) -> Builder:
    def build(params: dict[str, Any], classes: Sequence[str]) -> base.Classifier:
        return factory(**{"seed": 0, **params})

    return build


Builder = Callable[[dict[str, Any], Sequence[str]], base.Classifier]

BUILDERS: dict[str, Builder] = {
    "logistic_regression": _logistic_regression,
    "hoeffding_tree": lambda params, classes: tree.HoeffdingTreeClassifier(**params),
    "hoeffding_adaptive_tree": _seeded(tree.HoeffdingAdaptiveTreeClassifier),
    "adaptive_random_forest": _seeded(forest.ARFClassifier),
    "gaussian_nb": lambda params, classes: naive_bayes.GaussianNB(**params),
}

# Unsupervised anomaly scorers, as two-class models (their accuracy is not a classifier's).
DETECTORS: dict[str, Builder] = {
    "half_space_trees": _half_space_trees,
}


def build_model(name: str, params: dict[str, Any] | None = None, classes: Sequence[str] = ()) -> base.Classifier:
    """A fresh River classifier from a short name or a dotted import path.

    ``classes`` is the configured class set, the positive class last; models that need to know it
    (binary logistic regression) use it, the others learn classes as they come.
    """
    params = dict(params or {})
    if name in BUILDERS or name in DETECTORS:
        builder = BUILDERS.get(name) or DETECTORS[name]
    elif "." in name:
        builder = _import_classifier(name)
    else:
        known = ", ".join(sorted([*BUILDERS, *DETECTORS]))
        raise ValueError(f"unknown model {name!r}: use one of {known}, or a dotted path such as 'river.tree.HoeffdingTreeClassifier'")
    try:
        model = builder(params, tuple(classes))
    except TypeError as exc:
        raise ValueError(f"bad parameters for model {name!r}: {exc}") from None
    if not isinstance(model, base.Classifier):
        raise ValueError(f"model {name!r} is a {type(model).__name__}, not a River classifier")
    if not model._multiclass and not isinstance(_last_step(model), (BinaryLabels, AnomalyScores)):
        # A binary River classifier learns True/False: give it the two configured classes.
        if len(classes) != 2:
            raise ValueError(f"model {name!r} is binary-only: configure exactly two classes, not {list(classes)}")
        model = BinaryLabels(model, classes[0], classes[1])
    return model


def linear_contributions(model: base.Classifier, x: dict, predicted: str | None, top: int = 5) -> dict[str, float] | None:
    """The features that pushed a linear model's score most: weight x scaled value, the ``top`` largest by size.

    Defined for the default model, ``Pipeline(StandardScaler, BinaryLabels(LogisticRegression))``
    (contributions to the log-odds of the positive class) and its one-vs-rest form for more classes
    (contributions to the predicted class's log-odds). For any other model it returns ``None``: there
    is no exact attribution to give, and the review app shows a documented approximation instead.
    Costs one ``transform_one`` and a dictionary walk; the engine calls it only for requested events.

    >>> model = build_model("logistic_regression", {}, ("legit", "fraud"))
    >>> for i in range(20):
    ...     model.learn_one({"amount": float(i), "hour": 3.0}, "fraud" if i > 10 else "legit")
    >>> linear_contributions(model, {"amount": 19.0, "hour": 3.0}, "fraud")
    {'amount': 0.1559, 'hour': 0.0}
    >>> linear_contributions(build_model("gaussian_nb"), {"amount": 1.0}, "fraud") is None
    True
    """
    if not isinstance(model, compose.Pipeline) or len(model.steps) != 2:
        return None
    scaler, last = model.steps.values()
    if not isinstance(scaler, preprocessing.StandardScaler):
        return None
    if isinstance(last, BinaryLabels) and isinstance(last.classifier, linear_model.LogisticRegression):
        regression = last.classifier
    elif isinstance(last, multiclass.OneVsRestClassifier) and predicted is not None:
        regression = last.classifiers.get(predicted)
        if not isinstance(regression, linear_model.LogisticRegression):
            return None
    else:
        return None
    weights = regression.weights
    if scaler.window_size is None and scaler.with_std:
        # StandardScaler.transform_one and the products in one pass (it runs on every label request).
        means, variances = scaler.means, scaler.vars
        contributions = []
        for name, value in x.items():
            v = variances[name]
            contributions.append((name, weights.get(name, 0.0) * ((value - means[name]) / v**0.5) if v else 0.0))
    else:
        contributions = [(name, weights.get(name, 0.0) * value) for name, value in scaler.transform_one(x).items()]
    ranked = heapq.nlargest(top, contributions, key=lambda item: abs(item[1]))
    return {name: round(float(value), 4) for name, value in ranked}


# -- scoring many events at once -----------------------------------------------------------------

Scores = dict[Any, float]
BatchScorer = Callable[[Sequence[Mapping[str, float]]], list[Scores]]


def batch_scorer(model: base.Classifier) -> BatchScorer:
    """A function scoring a list of feature dicts as ``[model.predict_proba_one(x) for x in xs]`` does.

    For the default model, ``Pipeline(StandardScaler, BinaryLabels(LogisticRegression))``, and its
    one-vs-rest form, it scores the whole list with numpy from the model's state *at call time*
    (the caller must not let the model learn during a call): ~1 µs an event instead of ~11 µs, with
    the same probabilities up to float rounding (~1e-15; ``tests/unit/test_models.py`` checks
    1e-9). Events whose feature names differ from the first event's are scored one by one, and so
    is every event of any other model or configuration (a windowed or mean-only scaler, a loss
    other than log loss, ``compose.learn_during_predict``). The scorer holds the model object: build
    a new one when the model is replaced (a snapshot restore).

    >>> model = build_model("logistic_regression", {}, ("legit", "fraud"))
    >>> model.learn_one({"x": 1.0, "y": 2.0}, "fraud"); model.learn_one({"x": 3.0, "y": 0.0}, "legit")
    >>> xs = [{"x": 2.0, "y": 1.0}, {"y": 1.0, "x": 2.0}, {"x": 2.0}]
    >>> batch_scorer(model)(xs) == [model.predict_proba_one(x) for x in xs]
    True
    """
    linear = _linear_parts(model)
    if linear is None:
        predict = model.predict_proba_one
        return lambda xs: [predict(x) for x in xs]
    return _LinearScorer(model, *linear)


def _linear_parts(model: base.Classifier) -> tuple[preprocessing.StandardScaler, base.Classifier] | None:
    """The scaler and the last step when the model is a scaled logistic regression we can vectorise."""
    if type(model) is not compose.Pipeline or len(model.steps) != 2:
        return None
    scaler, last = model.steps.values()
    if type(scaler) is not preprocessing.StandardScaler or not scaler.with_std or scaler.window_size is not None:
        return None
    if type(last) is BinaryLabels:
        regressions = [last.classifier]
    elif type(last) is multiclass.OneVsRestClassifier:
        regressions = [last.classifier]  # the template: its clones share its type and loss
    else:
        return None
    for regression in regressions:
        if type(regression) is not linear_model.LogisticRegression or type(regression.loss) is not optim.losses.Log:
            return None
    return scaler, last


def _probabilities(logits: np.ndarray) -> np.ndarray:
    """``river.utils.math.sigmoid`` elementwise: exactly 0 below -30 and 1 above 30, as River does."""
    with np.errstate(over="ignore"):
        p = 1.0 / (1.0 + np.exp(-logits))
    p[logits < -30] = 0.0
    p[logits > 30] = 1.0
    return p


class _LinearScorer:
    """:func:`batch_scorer` for a scaled logistic regression (binary, or one-vs-rest)."""

    def __init__(self, model: compose.Pipeline, scaler: preprocessing.StandardScaler, last: base.Classifier):
        self.model = model
        self.scaler = scaler
        self.last = last
        self._columns: tuple[str, ...] = ()
        self._row: Callable[[Mapping[str, float]], Any] = tuple

    def __call__(self, xs: Sequence[Mapping[str, float]]) -> list[Scores]:
        if not xs:
            return []
        if self.model._LEARN_UNSUPERVISED_DURING_PREDICT:  # predicting would update the scaler per event
            return [self.model.predict_proba_one(x) for x in xs]
        columns = tuple(xs[0])
        n = len(columns)
        if n == 0:
            return [self.model.predict_proba_one(x) for x in xs]
        if columns != self._columns:  # the same names chunk after chunk: build the getter once
            self._columns = columns
            self._row = itemgetter(*columns) if n > 1 else (lambda x, c=columns[0]: (x[c],))
        row = self._row
        rows: list[Any] = []
        alike: list[int] = []
        other: list[int] = []
        for i, x in enumerate(xs):
            if len(x) == n:  # same size and every name present: the same names
                try:
                    rows.append(row(x))
                    alike.append(i)
                    continue
                except KeyError:
                    pass
            other.append(i)
        scores: list[Scores] = [{}] * len(xs)
        if rows:
            for i, s in zip(alike, self._score_rows(rows, columns)):
                scores[i] = s
        predict = self.model.predict_proba_one
        for i in other:  # a different set of features: River's own path
            scores[i] = predict(xs[i])
        return scores

    def _score_rows(self, rows: list[Any], columns: tuple[str, ...]) -> list[Scores]:
        scaler = self.scaler
        means, variances = scaler.means, scaler.vars
        # What StandardScaler.transform_one reads, with its side effects: ``vars`` is a defaultdict,
        # so a name never learned gets an entry (0.0); ``means`` is read only where the variance
        # is not 0. Reading them the same way leaves the model's state (and snapshot) as River does.
        var = np.fromiter((variances[c] for c in columns), float, len(columns))
        mean = np.fromiter((means[c] if v else 0.0 for c, v in zip(columns, var.tolist())), float, len(columns))
        # The scaling is folded into the weights, w . (x - mean) / std = x . (w / std) - mean . (w / std),
        # with 0 where the variance is 0 (River's ``if v else 0.0``), so the chunk meets one matrix
        # product: every numpy call on a whole chunk lets kafka-python's IO threads take the GIL,
        # and the loop then waits to get it back (x6 slower scoring per call under the engine's load).
        inverse_std = np.divide(1.0, np.sqrt(var), out=np.zeros_like(var), where=var != 0.0)
        x = np.array(rows, dtype=float)
        last = self.last
        if type(last) is BinaryLabels:
            regression = last.classifier
            folded = regression._weights.to_numpy(columns) * inverse_std
            p = _probabilities(x @ folded + (regression.intercept - mean @ folded)).tolist()
            negative, positive = last.negative, last.positive
            return [{negative: 1.0 - q, positive: q} for q in p]
        labels = list(last.classifiers)
        if not labels:  # no class learned yet: River answers {}
            return [{} for _ in rows]
        folded = np.column_stack([last.classifiers[c]._weights.to_numpy(columns) for c in labels]) * inverse_std[:, None]
        intercepts = np.array([last.classifiers[c].intercept for c in labels], dtype=float) - mean @ folded
        votes = _probabilities(x @ folded + intercepts)
        total = votes.sum(axis=1)
        uniform = 1 / len(labels)
        out = []
        for row_votes, row_total in zip(votes.tolist(), total.tolist()):
            if row_total:
                out.append({label: v / row_total for label, v in zip(labels, row_votes)})
            else:
                out.append({label: uniform for label in labels})
        return out


def _last_step(model: base.Classifier) -> base.Estimator:
    return list(model.steps.values())[-1] if isinstance(model, compose.Pipeline) else model


def _import_classifier(path: str) -> Builder:
    module_name, _, attr = path.rpartition(".")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        raise ValueError(f"cannot import model {path!r}") from None
    if not callable(factory):
        raise ValueError(f"model {path!r} is not a class or factory")
    return lambda params, classes: factory(**params)
