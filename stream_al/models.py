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
from typing import Any, Callable, Sequence

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
