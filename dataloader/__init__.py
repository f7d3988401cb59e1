"""Feature loading: packed per-feature caches (features.py) and batch serving (dataset.py)."""

from dataloader.dataset import SampleSet
from dataloader.features import FeatureStore, MissingFeature, load_features, pack_feature

__all__ = ["FeatureStore", "MissingFeature", "SampleSet", "load_features", "pack_feature"]
