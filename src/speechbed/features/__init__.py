"""Features for the acoustic models (fbank, sigbank, raw), their zarr cache and the training loader.

scripts/compute_features.py builds caches; training reads them through the loader names below.
The names load their module on first use, so a light import (the feature settings, the
compute job's schema, read by the sweep) never pulls in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "build_feature_cache": "build",
    "FeatureCache": "cache",
    "make_computer": "computers",
    "BucketBatchSampler": "loader",
    "CachedUtterance": "loader",
    "CachedUtterances": "loader",
    "PaddedBatch": "loader",
    "collate_padded": "loader",
    "NAMED_FEATURES": "settings",
    "FbankSettings": "settings",
    "RawSettings": "settings",
    "SigbankSettings": "settings",
    "resolve_feature": "settings",
    "settings_hash": "settings",
    "FeatureStoreWriter": "store_writer",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'speechbed.features' has no attribute {name!r}")
    return getattr(importlib.import_module(f"speechbed.features.{module}"), name)
