"""Stand-ins for the data side of training: a tiny config and a deterministic, resumable loader.

The loader numbers micro-batches globally: rank r's j-th micro-batch is global micro-batch
``j * world_size + r``, so one rank with accumulation 2 and two ranks with accumulation 1
see the same samples in every optimiser step (what the rank-equivalence tests need).
"""

from __future__ import annotations

import torch

from data_pipeline.records import BAD_KINDS
from pixelbert.batch import Batch
from pixelbert.config import config_from_dict

VOCAB = 512
SEQ = 8
IMAGE = 32


def tiny_train_config(output_dir, *, deterministic: bool = False, stage: int = 2, **train) -> dict:
    """A full config dict: resnet18 to layer2 at 32 px (16 pixel tokens), 1-layer BERT, hidden 64.

    ``deterministic``: no dropout and pixel sampling that keeps all 16 pixels (a permutation,
    which a transformer without pixel positions is invariant to), frozen BN (batch statistics
    would depend on how the batch is split over ranks).
    """
    drop = 0.0 if deterministic else 0.1
    text = {"vocab_size": VOCAB, "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 128, "max_position_embeddings": 64,
            "hidden_dropout_prob": drop, "attention_probs_dropout_prob": drop}
    t = {"output_dir": str(output_dir), "max_steps": 6, "epochs": 1, "warmup_steps": 2, "decay_epochs": [1],
         "log_every": 1, "checkpoint_every": 3, "keep_last": 2, "seed": 3, "lr_transformer": 1e-3}
    t.update(train)
    return {
        "model": {"backbone": "resnet18", "feature_stage": 2, "extra_pool": False, "frozen_bn": deterministic,
                  "pixel_samples": 16 if deterministic else 5, "visual_dropout": drop, "text_config": text,
                  "heads": ["mlm", "itm"]},
        "data": {"image_size": IMAGE, "max_image_size": IMAGE, "max_text_len": SEQ, "micro_batch_size": 4},
        "train": t,
        "deepspeed": {"zero_optimization": {"stage": stage}},
    }


def tiny_config(output_dir, **kw):
    return config_from_dict(tiny_train_config(output_dir, **kw), source="<test>")


def make_sample_batch(sample_ids: list[int]) -> Batch:
    """One micro-batch whose content depends only on the sample ids."""
    images, ids, mlm, itm = [], [], [], []
    for sid in sample_ids:
        g = torch.Generator().manual_seed(sid)
        images.append(torch.randn(3, IMAGE, IMAGE, generator=g))
        tokens = torch.randint(5, VOCAB, (SEQ,), generator=g)
        tokens[0], tokens[-1] = 1, 2
        labels = torch.full((SEQ,), -100)
        pos = torch.randint(1, SEQ - 1, (2,), generator=g)
        labels[pos] = tokens[pos]
        tokens[pos] = 3  # [MASK]
        ids.append(tokens)
        mlm.append(labels)
        itm.append(int(torch.randint(0, 2, (1,), generator=g)))
    n = len(sample_ids)
    return Batch(images=torch.stack(images), pixel_mask=torch.ones(n, IMAGE, IMAGE, dtype=torch.bool),
                 input_ids=torch.stack(ids), attention_mask=torch.ones(n, SEQ, dtype=torch.long),
                 mlm_labels=torch.stack(mlm), itm_labels=torch.tensor(itm))


class SyntheticLoader:
    """Deterministic loader with the optional loader protocol the trainer uses."""

    def __init__(self, micro_batch: int, rank: int = 0, world_size: int = 1, batches_per_epoch: int = 8):
        self.micro_batch, self.rank, self.world_size = micro_batch, rank, world_size
        self.batches_per_epoch = batches_per_epoch
        self.epoch, self.pos = 0, 0

    def __len__(self) -> int:
        return self.batches_per_epoch

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.pos = epoch, 0

    def __iter__(self):
        if self.pos >= self.batches_per_epoch:  # a finished epoch restarts (as eval loaders are reused)
            self.pos = 0
        while self.pos < self.batches_per_epoch:
            u = self.pos * self.world_size + self.rank
            self.pos += 1
            base = 1_000_003 * self.epoch + u * self.micro_batch
            yield make_sample_batch(list(range(base, base + self.micro_batch)))

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos = state["epoch"], state["pos"]

    @property
    def bad_samples(self) -> dict:
        """No bad data here, counted under the real loader's kinds (what the trainer logs)."""
        return {kind: 0 for kind in BAD_KINDS}
