"""Features for the acoustic models (fbank, sigbank, raw), their zarr cache and the training loader.

scripts/compute_features.py builds caches; training reads them through the loader names below.
"""

from speechbed.features.build import build_feature_cache
from speechbed.features.cache import FeatureCache
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
from speechbed.features.store_writer import FeatureStoreWriter

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
