"""Model registry: ``@register_model("name")`` on a class, ``create_model("name", ...)`` to build it.

Every model takes ``feat_dims`` (one per selected feature), ``frame_level`` (one bool per feature),
``num_classes`` and its hyperparameters (``models/model-tune.yaml`` holds the defaults), and returns
from ``forward(feats, masks)`` a dict with at least ``logits`` of shape ``(B, num_classes)``.
"""

import importlib
import inspect
import os
import pkgutil

import yaml

MODEL_REGISTRY = {}


def register_model(name):
    def wrap(cls):
        if name in MODEL_REGISTRY:
            raise ValueError(f"model '{name}' is registered twice")
        MODEL_REGISTRY[name] = cls
        cls.model_name = name
        return cls
    return wrap


def _import_all():
    here = os.path.dirname(__file__)
    for mod in pkgutil.iter_modules([here]):
        if not mod.name.startswith("_") and not mod.ispkg:
            importlib.import_module(f"models.{mod.name}")


def list_models():
    return sorted(MODEL_REGISTRY)


def load_model_config(name, path=None):
    """Hyperparameters of ``name`` from model-tune.yaml (empty if the model has no entry)."""
    from config import MODEL_TUNE_YAML
    path = path or MODEL_TUNE_YAML
    with open(path) as f:
        table = yaml.safe_load(f) or {}
    return dict(table.get(name) or {})


def create_model(name, feat_dims, frame_level, num_classes, **hparams):
    if name not in MODEL_REGISTRY:
        raise KeyError(f"unknown model '{name}'; registered models: {', '.join(list_models())}")
    cls = MODEL_REGISTRY[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters
                if p not in ("self", "feat_dims", "frame_level", "num_classes")]
    unknown = sorted(set(hparams) - set(accepted))
    if unknown:
        raise ValueError(f"model '{name}' has no hyperparameter {', '.join(unknown)}; it takes: {', '.join(accepted)}")
    return cls(feat_dims=list(feat_dims), frame_level=list(frame_level), num_classes=num_classes, **hparams)


_import_all()
