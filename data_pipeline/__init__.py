"""Data pipeline: raw dataset files -> validated webdataset shards -> DALI or torch loaders -> Batch.

    python -m data_pipeline.build_shards --dataset coco_karpathy --root data/coco --out runs/data/coco
    from data_pipeline import build_loader
    loader = build_loader(config, "train", rank, world_size)   # for batch in loader: ...

Library code only (the one CLI lives in ``build_shards.main``); the model never imports it.
Names load lazily so that ``python -m data_pipeline.build_shards`` runs its module only once.
"""

__all__ = ["build_loader", "build_shards", "DataError", "BAD_KINDS"]

_HOME = {"build_loader": "data_pipeline.loaders", "build_shards": "data_pipeline.build_shards",
         "DataError": "data_pipeline.records", "BAD_KINDS": "data_pipeline.records"}


def __getattr__(name: str):
    if name in _HOME:
        import importlib

        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'data_pipeline' has no attribute {name!r}")
