"""Data: label tables, name lists and split lists (``files``), packed per-feature caches (``features``), batch
serving (``dataset``) and the dialogue index that lets context models read whole dialogues (``dialogue``).

The names below load on first use, so that ``dataloader.files`` can be imported without torch."""

__all__ = ["DialogueIndex", "FeatureStore", "MissingFeature", "SampleSet", "load_features", "pack_feature"]
_WHERE = {"SampleSet": "dataset", "DialogueIndex": "dialogue", "FeatureStore": "features", "MissingFeature": "features",
          "load_features": "features", "pack_feature": "features"}


def __getattr__(name):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"dataloader.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'dataloader' has no attribute '{name}'")
