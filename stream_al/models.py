"""River model construction: the one place that builds classifiers.

A model is named in config by a short name or by the dotted import path of any River classifier,
with keyword parameters. Unknown names, non-classifiers and bad parameters fail at start.

>>> model = build_model("logistic_regression")
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
ValueError: unknown model 'svm': use one of adaptive_random_forest, gaussian_nb, hoeffding_adaptive_tree, hoeffding_tree, logistic_regression, or a dotted path such as 'river.tree.HoeffdingTreeClassifier'
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from river import base, compose, forest, linear_model, multiclass, naive_bayes, optim, preprocessing, tree


def _logistic_regression(params: dict[str, Any]) -> base.Classifier:
    """Scaled logistic regression; one-vs-rest so it also handles more than two classes."""
    params = dict(params)
    learning_rate = params.pop("learning_rate", 0.05)
    params.setdefault("optimizer", optim.SGD(learning_rate))
    return compose.Pipeline(
        preprocessing.StandardScaler(),
        multiclass.OneVsRestClassifier(linear_model.LogisticRegression(**params)),
    )


def _seeded(factory: Callable[..., base.Classifier]) -> Callable[[dict[str, Any]], base.Classifier]:
    def build(params: dict[str, Any]) -> base.Classifier:
        return factory(**{"seed": 0, **params})

    return build


BUILDERS: dict[str, Callable[[dict[str, Any]], base.Classifier]] = {
    "logistic_regression": _logistic_regression,
    "hoeffding_tree": lambda params: tree.HoeffdingTreeClassifier(**params),
    "hoeffding_adaptive_tree": _seeded(tree.HoeffdingAdaptiveTreeClassifier),
    "adaptive_random_forest": _seeded(forest.ARFClassifier),
    "gaussian_nb": lambda params: naive_bayes.GaussianNB(**params),
}


def build_model(name: str, params: dict[str, Any] | None = None) -> base.Classifier:
    """A fresh River classifier from a short name or a dotted import path."""
    params = dict(params or {})
    if name in BUILDERS:
        builder = BUILDERS[name]
    elif "." in name:
        builder = _import_classifier(name)
    else:
        known = ", ".join(sorted(BUILDERS))
        raise ValueError(f"unknown model {name!r}: use one of {known}, or a dotted path such as 'river.tree.HoeffdingTreeClassifier'")
    try:
        model = builder(params)
    except TypeError as exc:
        raise ValueError(f"bad parameters for model {name!r}: {exc}") from None
    if not isinstance(model, base.Classifier):
        raise ValueError(f"model {name!r} is a {type(model).__name__}, not a River classifier")
    return model


def _import_classifier(path: str) -> Callable[[dict[str, Any]], base.Classifier]:
    module_name, _, attr = path.rpartition(".")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        raise ValueError(f"cannot import model {path!r}") from None
    if not callable(factory):
        raise ValueError(f"model {path!r} is not a class or factory")
    return lambda params: factory(**params)
