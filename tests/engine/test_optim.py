"""The SGD(CNN) + AdamW(transformer) split as one optimiser, and the per-group schedule."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from pixelbert.config import TrainConfig
from pixelbert.engine.optim import SplitOptimizer, WarmupStepDecay, build_param_groups, build_schedule
from pixelbert.modeling.model import PixelBert


class Toy(nn.Module):
    """A CNN trunk, a LayerNorm'd transformer-ish part and a head tied to an embedding."""

    parameter_groups = PixelBert.parameter_groups  # the model's split: backbone.* is the CNN

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.embed = nn.Embedding(10, 4)
        self.layer = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.semantic = nn.Parameter(torch.zeros(4))
        self.decoder = nn.Linear(4, 10, bias=False)
        self.decoder.weight = self.embed.weight

    def forward(self, x, ids):
        v = self.backbone(x).mean((2, 3))
        return self.decoder(self.norm(self.layer(self.embed(ids) + v[:, None] + self.semantic)))


def groups_by_name(model, train=None):
    return {g["name"]: g for g in build_param_groups(model, train or TrainConfig())}


def test_cnn_parameters_get_sgd_and_the_rest_adamw():
    model = Toy()
    groups = groups_by_name(model)
    assert {n: g["rule"] for n, g in groups.items()} == {
        "cnn": "sgd", "cnn_no_decay": "sgd", "transformer": "adamw", "transformer_no_decay": "adamw"}
    cnn = {id(p) for n in ("cnn", "cnn_no_decay") for p in groups[n]["params"]}
    assert cnn == {id(p) for p in model.backbone.parameters()}


def test_paper_hyperparameters_per_group():
    groups = groups_by_name(Toy())
    assert (groups["cnn"]["lr"], groups["cnn"]["weight_decay"], groups["cnn"]["momentum"]) == (1e-2, 5e-4, 0.9)
    assert (groups["transformer"]["lr"], groups["transformer"]["weight_decay"]) == (1e-4, 1e-2)
    assert groups["transformer_no_decay"]["weight_decay"] == 0.0 and groups["cnn_no_decay"]["weight_decay"] == 0.0


def test_no_decay_on_bias_norm_and_vectors_and_tied_weights_counted_once():
    model = Toy()
    groups = groups_by_name(model)
    no_decay = {id(p) for p in groups["transformer_no_decay"]["params"]}
    for p in (model.layer.bias, model.norm.weight, model.norm.bias, model.semantic):
        assert id(p) in no_decay
    decay = [id(p) for p in groups["transformer"]["params"]]
    assert decay.count(id(model.embed.weight)) == 1 and id(model.layer.weight) in decay
    all_ids = [id(p) for g in groups.values() for p in g["params"]]
    assert len(all_ids) == len(set(all_ids)) == len(list(model.parameters()))


def test_cnn_can_take_adamw_with_its_own_lr_and_decay():
    groups = groups_by_name(Toy(), TrainConfig(cnn_optimizer="adamw", lr_cnn=1e-3, weight_decay_cnn=0.05))
    assert groups["cnn"]["rule"] == groups["cnn_no_decay"]["rule"] == "adamw"
    assert (groups["cnn"]["lr"], groups["cnn"]["weight_decay"], groups["cnn_no_decay"]["weight_decay"]) == (1e-3, 0.05, 0.0)
    assert groups["transformer"]["lr"] == 1e-4  # the transformer's rule is untouched


def test_frozen_cnn_is_left_out():
    model = Toy()
    model.backbone.requires_grad_(False)
    assert set(groups_by_name(model)) == {"transformer", "transformer_no_decay"}


def _three_steps_beside_plain_sgd_and_adamw(adamw_impl: str = "torch", fused: bool = False):
    """(split optimiser, its model, the reference model stepped by separate SGD and AdamW)."""
    torch.manual_seed(0)
    model = Toy()
    ref = copy.deepcopy(model)
    x, ids = torch.randn(2, 3, 6, 6), torch.randint(0, 10, (2, 5))
    opt = SplitOptimizer(build_param_groups(model, TrainConfig()), adamw_impl=adamw_impl)
    ref_groups = build_param_groups(ref, TrainConfig())
    sgd = torch.optim.SGD([g for g in ref_groups if g["rule"] == "sgd"], lr=0.1)
    adamw = torch.optim.AdamW([g for g in ref_groups if g["rule"] == "adamw"], lr=0.1, fused=fused or None)
    for _ in range(3):
        for m, opts in ((model, [opt]), (ref, [sgd, adamw])):
            m(x, ids).square().mean().backward()
            for o in opts:
                o.step()
                o.zero_grad()
    return opt, model, ref


def test_split_step_equals_separate_sgd_and_adamw():
    _, model, ref = _three_steps_beside_plain_sgd_and_adamw()
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_split_steps_only_the_groups_it_holds_at_call_time():
    """ZeRO-1/2 hand the optimiser one group at a time by swapping param_groups."""
    model = Toy()
    opt = SplitOptimizer(build_param_groups(model, TrainConfig()))
    model(torch.randn(1, 3, 6, 6), torch.zeros(1, 2, dtype=torch.long)).sum().backward()
    before = {id(p): p.detach().clone() for p in model.parameters()}
    everything = opt.param_groups
    opt.param_groups = [g for g in everything if g["name"] == "cnn"]
    opt.step()
    opt.param_groups = everything
    for p in model.parameters():
        moved = not torch.equal(before[id(p)], p.detach())
        assert moved == any(p is q for q in everything[0]["params"]), "only the cnn group moves"


def test_state_dict_round_trip_keeps_stepping_identically():
    torch.manual_seed(0)
    a, b = Toy(), None
    b = copy.deepcopy(a)
    x, ids = torch.randn(2, 3, 6, 6), torch.randint(0, 10, (2, 5))
    opt_a = SplitOptimizer(build_param_groups(a, TrainConfig()))
    a(x, ids).sum().backward()
    opt_a.step()
    opt_a.zero_grad()
    b.load_state_dict(a.state_dict())
    opt_b = SplitOptimizer(build_param_groups(b, TrainConfig()))
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # as from a file: no shared tensors
    for m, o in ((a, opt_a), (b, opt_b)):
        m(x, ids).sum().backward()
        o.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_non_finite_gradient_skips_the_step_when_the_optimiser_clips():
    model = Toy()
    opt = SplitOptimizer(build_param_groups(model, TrainConfig()), max_grad_norm=1.0)
    for p in model.parameters():
        p.grad = torch.full_like(p, float("nan"))
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert opt.overflow and all(torch.equal(p, q) for p, q in zip(before, model.parameters()))


def lrs(schedule: WarmupStepDecay) -> dict[str, float]:
    return {g["name"]: g["lr"] for g in schedule.optimizer.param_groups}


def test_schedule_per_group_at_warmup_end_and_after_decays():
    train = TrainConfig(warmup_steps=10, decay_epochs=[2, 3], decay_factor=0.1)
    model = Toy()
    schedule = build_schedule(SplitOptimizer(build_param_groups(model, train)), train, steps_per_epoch=20)
    assert lrs(schedule)["cnn"] == pytest.approx(1e-2 / 10)  # first update: 1/10 of warm-up
    for _ in range(9):
        schedule.step()
    assert lrs(schedule) == pytest.approx({"cnn": 1e-2, "cnn_no_decay": 1e-2, "transformer": 1e-4,
                                           "transformer_no_decay": 1e-4})  # update 10 ends warm-up
    for _ in range(30):  # update index 39: the last one of epoch 1
        schedule.step()
    assert lrs(schedule)["cnn"] == pytest.approx(1e-2) and lrs(schedule)["transformer"] == pytest.approx(1e-4)
    schedule.step()  # index 40 = epoch 2: first decay
    assert lrs(schedule)["cnn"] == pytest.approx(1e-3) and lrs(schedule)["transformer"] == pytest.approx(1e-5)
    for _ in range(20):  # index 60 = epoch 3: second decay
        schedule.step()
    assert lrs(schedule)["cnn"] == pytest.approx(1e-4) and lrs(schedule)["transformer"] == pytest.approx(1e-6)


def test_schedule_state_restores_the_lr():
    train = TrainConfig(warmup_steps=4, decay_epochs=[1], decay_factor=0.5)
    model = Toy()
    s1 = build_schedule(SplitOptimizer(build_param_groups(model, train)), train, steps_per_epoch=6)
    for _ in range(7):
        s1.step()
    s2 = build_schedule(SplitOptimizer(build_param_groups(model, train)), train, steps_per_epoch=6)
    s2.load_state_dict(s1.state_dict())
    assert lrs(s2) == lrs(s1) == pytest.approx({"cnn": 5e-3, "cnn_no_decay": 5e-3, "transformer": 5e-5,
                                                "transformer_no_decay": 5e-5})


def test_the_torch_fused_adamw_fallback_steps_as_torch_fused_adamw_does():
    """What a GPU without a buildable DeepSpeed FusedAdam runs (torch's fused kernel runs on CPU too)."""
    opt, model, ref = _three_steps_beside_plain_sgd_and_adamw("torch_fused", fused=True)
    assert all(g["fused"] for g in opt.param_groups if g["rule"] == "adamw")
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_an_unknown_adamw_kernel_is_refused():
    with pytest.raises(ValueError, match="unknown adamw_impl 'fused'"):
        SplitOptimizer(build_param_groups(Toy(), TrainConfig()), adamw_impl="fused")
