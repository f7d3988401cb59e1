"""Model registry: ``@register_model("name")`` on a class, ``create_model("name", ...)`` to build it.

Every model takes ``feat_dims`` (one per selected feature), ``frame_level`` (one bool per feature),
``num_classes`` and its hyperparameters (``models/model-tune.yaml`` holds the defaults), and returns
from ``forward(feats, masks)`` a dict with at least ``logits`` of shape ``(B, num_classes)`` and ``hidden``, its
fused representation. ``create_model(..., context=K)`` with K > 0 wraps the model in a dialogue context layer
(models/context.py); ``context_level``, ``context_hidden``, ``context_dropout``, ``context_aux`` and
``context_mask`` configure it.
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


def model_class(name):
    """The registered class of model ``name``; a KeyError naming the registered models otherwise."""
    if name not in MODEL_REGISTRY:
        raise KeyError(f"unknown model '{name}'; registered models: {', '.join(list_models())}")
    return MODEL_REGISTRY[name]


def create_model(name, feat_dims, frame_level, num_classes, **hparams):
    """Build registered model ``name``; with ``context`` > 0 inside a ``ContextModel`` (models/context.py)."""
    from models.context import CONTEXT_DEFAULTS, ContextModel
    ctx = {k: hparams.pop(k) for k in list(hparams) if k in CONTEXT_DEFAULTS}
    ctx = {k: (CONTEXT_DEFAULTS[k] if v is None else v) for k, v in {**CONTEXT_DEFAULTS, **ctx}.items()}
    cls = model_class(name)
    accepted = [p for p in inspect.signature(cls.__init__).parameters
                if p not in ("self", "feat_dims", "frame_level", "num_classes")]
    unknown = sorted(set(hparams) - set(accepted))
    if unknown:
        raise ValueError(f"model '{name}' has no hyperparameter {', '.join(unknown)}; it takes: {', '.join(accepted)}")
    model = cls(feat_dims=list(feat_dims), frame_level=list(frame_level), num_classes=num_classes, **hparams)
    if int(ctx["context"]) > 0:
        return ContextModel(model, **ctx)
    if int(ctx["context"]) < 0:
        raise ValueError(f"context must be 0 (off) or a number of neighbours on each side, got {ctx['context']}")
    return model


_import_all()
