"""Feature loading: packed per-feature caches (features.py), batch serving (dataset.py) and the dialogue
index that lets context models read whole dialogues (dialogue.py)."""

from dataloader.dataset import SampleSet
from dataloader.dialogue import DialogueIndex
from dataloader.features import FeatureStore, MissingFeature, load_features, pack_feature

__all__ = ["DialogueIndex", "FeatureStore", "MissingFeature", "SampleSet", "load_features", "pack_feature"]
