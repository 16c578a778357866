"""Features for the acoustic models (fbank, sigbank, raw), their zarr cache and the training loader.

scripts/compute_features.py builds caches; training reads them through the loader names below.
"""

from speechbed.features.build import build_feature_cache
from speechbed.features.cache import FeatureCache, FeatureStoreWriter
from speechbed.features.computers import make_computer
from speechbed.features.loader import (
    BucketBatchSampler,
    CachedUtterance,
    CachedUtterances,
    PaddedBatch,
    collate_padded,
)
from speechbed.features.settings import (
    NAMED_FEATURES,
    FbankSettings,
    RawSettings,
    SigbankSettings,
    resolve_feature,
    settings_hash,
)

__all__ = [
    "NAMED_FEATURES",
    "BucketBatchSampler",
    "CachedUtterance",
    "CachedUtterances",
    "FbankSettings",
    "FeatureCache",
    "FeatureStoreWriter",
    "PaddedBatch",
    "RawSettings",
    "SigbankSettings",
    "build_feature_cache",
    "collate_padded",
    "make_computer",
    "resolve_feature",
    "settings_hash",
]
