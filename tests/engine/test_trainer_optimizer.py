"""The optimiser the Trainer actually builds: the paper's split on the real model, in one process."""

from __future__ import annotations

import torch

from pixelbert import build_model
from pixelbert.engine.trainer import Trainer
from pixelbert.tasks.pretrain import PretrainTask

from synthetic import SyntheticLoader, tiny_config  # tests/engine is on sys.path (conftest)


def test_the_trainer_steps_the_cnn_with_sgd_and_everything_else_with_adamw(tmp_path):
    # The Trainer joins (or makes) a group of one process on loopback, as a plain python run does;
    # its variables stay for the later in-process tests that share the group.
    cfg = tiny_config(tmp_path, stage=0)
    torch.manual_seed(0)
    model = build_model(cfg)
    trainer = Trainer(model, PretrainTask.from_config(cfg), SyntheticLoader(cfg.data.micro_batch_size), cfg)
    group_of = {id(p): g for g in trainer.optimizer.param_groups for p in g["params"]}
    cnn = {id(p) for p in model.backbone.parameters()}
    assert cnn and len(group_of) == len({id(p) for p in model.parameters()})
    for name, p in model.named_parameters():
        rule, lr = (("sgd", cfg.train.lr_cnn) if id(p) in cnn else ("adamw", cfg.train.lr_transformer))
        assert (group_of[id(p)]["rule"], group_of[id(p)]["base_lr"]) == (rule, lr), name


def test_alone_at_zero_0_the_engine_skips_the_identity_all_reduce_and_trains_the_same(tmp_path):
    params = {}
    for allreduce in (False, True):
        cfg = tiny_config(tmp_path / str(allreduce), stage=0, deterministic=True, gradient_accumulation=2, max_steps=2,
                          checkpoint_every=10)
        torch.manual_seed(0)
        model = build_model(cfg)
        trainer = Trainer(model, PretrainTask.from_config(cfg), SyntheticLoader(cfg.data.micro_batch_size), cfg)
        assert trainer.engine.enable_backward_allreduce is False  # one process, ZeRO 0: nothing to reduce
        trainer.engine.enable_backward_allreduce = allreduce  # DeepSpeed's default, for comparison
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        trainer.fit()
        assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())  # it did train
        params[allreduce] = {n: p.detach().clone() for n, p in model.named_parameters()}
    for name, p in params[True].items():
        assert torch.equal(params[False][name], p), name
