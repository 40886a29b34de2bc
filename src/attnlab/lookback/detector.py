"""The Lookback Lens detector: a logistic regression on ``[L*H]`` lookback-ratio features, kept as JSON.

As in Chuang et al. 2024 (``step03_lookback_lens.py``): scikit-learn ``LogisticRegression(max_iter=1000)``, label
1 = faithful (factual), 0 = hallucinated, so ``predict_proba(X)[:, 1]`` is P(faithful). The paper pickles the
fitted classifier; here it is saved as JSON (coefficients, intercept, the model's layers x heads, the feature
setting, the model's name) and never pickled, so a detector file is data that cannot run code.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from attnlab.errors import AttnlabError

SETTINGS = ("span", "window")
FORMAT = "attnlab-lookback-detector/1"


class LookbackDetector:
    """Logistic regression on lookback-ratio features (Chuang et al. 2024), scikit-learn style.

    ``setting`` is ``"span"`` (mean ratio over a predefined span of the reply) or ``"window"`` (over ``window``
    consecutive tokens, 8 in the paper); ``n_layers`` x ``n_heads`` is the shape of the model the features come
    from, and ``model_name`` names it. Arguments are stored as given and checked by :meth:`fit`.
    """

    def __init__(self, n_layers: int, n_heads: int, *, setting: str = "span", window: int = 8,
                 model_name: str = "", max_iter: int = 1000) -> None:
        self.n_layers, self.n_heads = n_layers, n_heads
        self.setting, self.window, self.model_name, self.max_iter = setting, window, model_name, max_iter

    def _check_params(self) -> None:
        for name in ("n_layers", "n_heads", "window", "max_iter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise AttnlabError(f"LookbackDetector {name} must be a whole number >= 1, got {value!r}")
        if self.setting not in SETTINGS:
            raise AttnlabError(f"unknown feature setting '{self.setting}': choose {' or '.join(SETTINGS)}")

    @property
    def n_features(self) -> int:
        return self.n_layers * self.n_heads

    def _check_features(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            got = X.shape[1] if X.ndim == 2 else f"shape {X.shape}"
            raise AttnlabError(f"features of {got} columns given to a detector for {self.n_layers} layers x "
                               f"{self.n_heads} heads = {self.n_features}: compute them on the model it was trained "
                               "for")
        if not np.isfinite(X).all():
            raise AttnlabError("features contain NaN or infinity: every span needs at least one reply token")
        return X

    def fit(self, X, y) -> "LookbackDetector":
        """Fit on features ``X [N, L*H]`` and labels ``y`` (1 faithful, 0 hallucinated); both classes needed."""
        from sklearn.linear_model import LogisticRegression

        self._check_params()
        X = self._check_features(X)
        y = np.asarray(y).astype(int)
        if set(np.unique(y)) != {0, 1}:
            raise AttnlabError(f"the labels hold {sorted(set(np.unique(y).tolist()))}: fitting needs both faithful (1) "
                               "and hallucinated (0) examples")
        self.classifier_ = LogisticRegression(max_iter=self.max_iter).fit(X, y)
        return self

    def predict_proba(self, X) -> np.ndarray:
        """``[N, 2]``: P(hallucinated), P(faithful) per row of ``X``."""
        if not hasattr(self, "classifier_"):
            raise AttnlabError("this LookbackDetector is not fitted: call fit(X, y) or load a saved one")
        return self.classifier_.predict_proba(self._check_features(X))

    def check_model(self, model, name: str = "this model") -> None:
        """One line refusing a model whose layers x heads differ from the detector's."""
        from attnlab.models.config import ModelShape

        shape = ModelShape.of(model)
        if (shape.n_layers, shape.n_heads) != (self.n_layers, self.n_heads):
            trained = f" ({self.model_name})" if self.model_name else ""
            raise AttnlabError(f"this detector was trained for {self.n_layers} layers x {self.n_heads} heads"
                               f"{trained} but {name} has {shape.n_layers} x {shape.n_heads}: fit one on {name}")

    def to_dict(self) -> dict:
        """The fitted detector as JSON-ready data."""
        if not hasattr(self, "classifier_"):
            raise AttnlabError("this LookbackDetector is not fitted: call fit(X, y) before saving it")
        clf = self.classifier_
        return {"format": FORMAT, "model_name": self.model_name, "n_layers": self.n_layers, "n_heads": self.n_heads,
                "setting": self.setting, "window": self.window, "max_iter": self.max_iter,
                "classes": clf.classes_.tolist(), "coef": clf.coef_[0].tolist(),
                "intercept": float(clf.intercept_[0])}

    def save(self, path) -> Path:
        """Write the detector to ``path`` as JSON."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict()))
        return path

    @classmethod
    def from_dict(cls, data: dict) -> "LookbackDetector":
        """A fitted detector from :meth:`to_dict`'s data."""
        from sklearn.linear_model import LogisticRegression

        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise AttnlabError(f"not a Lookback Lens detector (expected format {FORMAT}): give a file written by "
                               "'attnlab lookback fit'")
        det = cls(data["n_layers"], data["n_heads"], setting=data["setting"], window=data["window"],
                  model_name=data["model_name"], max_iter=data["max_iter"])
        det._check_params()
        coef = np.asarray(data["coef"], dtype=np.float64)
        if coef.shape != (det.n_features,):
            raise AttnlabError(f"the detector file has {coef.size} coefficients for {det.n_layers} x {det.n_heads} "
                               "heads: it is damaged; fit it again")
        clf = LogisticRegression(max_iter=det.max_iter)
        clf.classes_ = np.asarray(data["classes"])
        clf.coef_ = coef[None, :]
        clf.intercept_ = np.asarray([data["intercept"]], dtype=np.float64)
        clf.n_features_in_ = det.n_features
        det.classifier_ = clf
        return det

    @classmethod
    def load(cls, path) -> "LookbackDetector":
        """Read a detector saved by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise AttnlabError(f"{path} is not a file: give a detector JSON written by 'attnlab lookback fit'")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise AttnlabError(f"{path} is not JSON: give a detector written by 'attnlab lookback fit'") from None
        return cls.from_dict(data)
