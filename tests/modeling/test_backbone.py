"""CNN trunks: sizes of the paper's trunks, stage cut, local weights, frozen BN, exact padding mask."""

import pytest
import torch
from safetensors.torch import save_file
from torchvision.models import resnet18
from torchvision.ops import FrozenBatchNorm2d

from pixelbert.config import ModelConfig
from pixelbert.modeling.backbone import build_backbone, size_mask, trunk_memory_format


def cfg(**kw) -> ModelConfig:
    return ModelConfig(text_config={"hidden_size": 64}, **kw)


def n_params(module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


@pytest.mark.parametrize(
    "name, millions", [("resnet50", 23.5), ("resnext152_32x8d", 120.3), ("resnext152_32x4d", 57.9)]
)
def test_full_trunk_has_the_papers_parameter_count(name, millions):
    with torch.device("meta"):
        trunk, channels = build_backbone(cfg(backbone=name))
    assert round(n_params(trunk), 1) == millions
    assert channels == 2048


def test_resnext152_is_bottleneck_3_8_36_3_with_32_groups():
    with torch.device("meta"):
        trunk, _ = build_backbone(cfg(backbone="resnext152_32x4d"))
    assert [len(s) for s in trunk.stages()] == [3, 8, 36, 3]
    assert trunk.layer2[0].conv2.groups == 32


@pytest.mark.parametrize("stage, channels, stride", [(1, 64, 4), (2, 128, 8), (3, 256, 16), (4, 512, 32)])
def test_feature_stage_cuts_the_trunk(stage, channels, stride):
    trunk, out_channels = build_backbone(cfg(backbone="resnet18", feature_stage=stage))
    assert out_channels == channels and trunk.stride == stride
    assert not hasattr(trunk, "fc") and not hasattr(trunk, "avgpool")
    assert [hasattr(trunk, f"layer{i}") for i in range(1, 5)] == [i <= stage for i in range(1, 5)]
    features, _ = trunk(torch.randn(1, 3, 64, 64))
    assert features.shape == (1, channels, 64 // stride, 64 // stride)


def imagenet_like_state(tmp_path):
    """A torchvision resnet18 state dict (with fc and all stages), as an ImageNet checkpoint would be."""
    torch.manual_seed(1)
    reference = resnet18()
    for m in reference.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return reference.state_dict()


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_load_from_a_local_file_ignoring_fc_and_later_stages(tmp_path, suffix):
    state = imagenet_like_state(tmp_path)
    path = tmp_path / f"r18{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    trunk, _ = build_backbone(cfg(backbone="resnet18", feature_stage=2, backbone_weights=str(path)))
    assert torch.equal(trunk.layer2[1].conv2.weight, state["layer2.1.conv2.weight"])
    assert torch.equal(trunk.bn1.running_var, state["bn1.running_var"])


def test_frozen_bn_uses_frozen_batchnorm_with_the_loaded_statistics(tmp_path):
    state = imagenet_like_state(tmp_path)
    torch.save(state, tmp_path / "r18.pth")
    trunk, _ = build_backbone(cfg(backbone="resnet18", frozen_bn=True, backbone_weights=str(tmp_path / "r18.pth")))
    assert isinstance(trunk.bn1, FrozenBatchNorm2d)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in trunk.modules())
    assert torch.equal(trunk.layer4[1].bn2.running_mean, state["layer4.1.bn2.running_mean"])
    # Frozen: no trainable BN parameters, and train mode does not update the statistics.
    assert n_params(trunk) == pytest.approx(11.1765 - 0.0096, abs=1e-3)
    before = trunk.bn1.running_mean.clone()
    trunk.train()(torch.randn(2, 3, 32, 32))
    assert torch.equal(trunk.bn1.running_mean, before)


def test_the_trunk_of_a_pixelbert_export_loads_as_backbone_weights(tmp_path):
    """The CNN stage's export (backbone.* beside bert.* and heads.*) takes ImageNet weights' place."""
    from model_helpers import tiny_model_config
    from pixelbert import build_model

    torch.manual_seed(2)
    model = build_model(tiny_model_config(heads=["words"], extra_pool=False, feature_stage=3))
    with torch.no_grad():
        model.backbone.bn1.running_var.uniform_(0.5, 2)
    model.save_pretrained(tmp_path / "cnn")
    weights = str(tmp_path / "cnn" / "model.safetensors")
    trunk, _ = build_backbone(cfg(backbone="resnet18", feature_stage=3, frozen_bn=True, backbone_weights=weights))
    for name, value in model.backbone.state_dict().items():
        if not name.endswith("num_batches_tracked"):
            assert torch.equal(trunk.state_dict()[name], value), name
    # A trunk the export does not hold (a later stage) is an error naming the file, not a partial load.
    with pytest.raises(ValueError, match=r"model\.safetensors.*missing.*layer4"):
        build_backbone(cfg(backbone="resnet18", feature_stage=4, backbone_weights=weights))


def test_a_checkpoint_of_another_architecture_fails_naming_the_file(tmp_path):
    state = imagenet_like_state(tmp_path)
    state["layer1.0.conv3.weight"] = torch.zeros(1)
    del state["layer1.0.conv1.weight"]
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"bad\.pth.*layer1\.0\.conv1\.weight.*layer1\.0\.conv3\.weight"):
        build_backbone(cfg(backbone="resnet18", backbone_weights=str(tmp_path / "bad.pth")))


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'"):
        build_backbone(cfg(backbone="vgg16"))


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_a_padded_images_valid_features_equal_the_image_run_alone(name):
    """BasicBlock and Bottleneck trunks; odd sizes exercise every ceil(n/2) step."""
    torch.manual_seed(0)
    trunk, _ = build_backbone(cfg(backbone=name, feature_stage=3))
    trunk.eval()
    for h, w in [(37, 29), (48, 33), (17, 48)]:
        image = torch.randn(1, 3, h, w)
        alone, alone_sizes = trunk(image)
        assert alone_sizes is None
        padded = torch.zeros(2, 3, 48, 48)
        padded[0, :, :h, :w] = image[0]
        padded[1] = torch.randn(3, 48, 48)
        batched, sizes = trunk(padded, torch.tensor([[h, w], [48, 48]]))
        fh, fw = alone.shape[-2:]
        assert sizes[0].tolist() == [fh, fw]
        # Random deep trunks reach large activations: compare at float precision of their scale.
        scale = alone.abs().max().item()
        torch.testing.assert_close(batched[0, :, :fh, :fw], alone[0], atol=1e-5 * scale, rtol=1e-4)
        assert batched[0, :, fh:].abs().sum() == 0 and batched[0, :, :, fw:].abs().sum() == 0


def test_size_mask_marks_the_top_left_rectangle():
    mask = size_mask(torch.tensor([[2, 3]]), 3, 4)
    assert mask.tolist() == [[[True, True, True, False], [True, True, True, False], [False] * 4]]


def _padded_batch(seed: int = 0):
    """Three images of odd sizes padded to 45x61: every stride-2 step rounds up somewhere."""
    g = torch.Generator().manual_seed(seed)
    sizes = torch.tensor([[45, 61], [37, 29], [20, 53]])
    images = torch.zeros(3, 3, 45, 61)
    for i, (h, w) in enumerate(sizes.tolist()):
        images[i, :, :h, :w] = torch.randn(3, h, w, generator=g)
    return images, sizes


def _trunk_with_statistics(name: str, frozen_bn: bool):
    """A trunk whose BatchNorms hold non-trivial running statistics, as ImageNet weights would."""
    torch.manual_seed(0)
    trunk, _ = build_backbone(cfg(backbone=name, frozen_bn=frozen_bn, feature_stage=3))
    with torch.no_grad():
        for m in trunk.modules():
            if hasattr(m, "running_var"):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return trunk


def _forward_backward(trunk, images, sizes):
    trunk.zero_grad(set_to_none=True)
    out, _ = trunk(images, sizes)
    out.square().sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in trunk.named_parameters()}


@pytest.mark.parametrize("frozen_bn, mode", [(True, "train"), (False, "eval")])
def test_skipping_the_re_mask_before_1x1_convolutions_leaves_output_and_gradients_bit_identical(frozen_bn, mode):
    trunk = _trunk_with_statistics("resnet50", frozen_bn).train(mode == "train")
    trunk.fold_frozen_bn = False  # one economy at a time
    images, sizes = _padded_batch()
    trunk.skip_1x1_remask = False
    masked_out, masked_grads = _forward_backward(trunk, images, sizes)
    trunk.skip_1x1_remask = True
    skipped_out, skipped_grads = _forward_backward(trunk, images, sizes)
    assert torch.equal(skipped_out, masked_out)
    assert all(torch.equal(skipped_grads[n], g) for n, g in masked_grads.items())


def test_batch_statistics_keep_the_re_mask_so_padding_never_reaches_them():
    """Training-mode BatchNorm would see left-over padding: there the skip is not taken."""
    trunk = _trunk_with_statistics("resnet50", frozen_bn=False).train()
    images, sizes = _padded_batch()
    trunk.skip_1x1_remask = False
    masked, _ = trunk(images, sizes)
    trunk.skip_1x1_remask = True
    assert torch.equal(trunk(images, sizes)[0], masked)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_folded_frozen_batchnorm_equals_separate_batchnorm_within_fp32_tolerance(name):
    trunk = _trunk_with_statistics(name, frozen_bn=True).train()
    images, sizes = _padded_batch()
    trunk.fold_frozen_bn = False
    separate_out, separate_grads = _forward_backward(trunk, images, sizes)
    trunk.fold_frozen_bn = True
    folded_out, folded_grads = _forward_backward(trunk, images, sizes)
    scale = separate_out.abs().max().item()
    torch.testing.assert_close(folded_out, separate_out, atol=1e-5 * scale, rtol=1e-4)
    # Gradients still reach every conv weight. Through 50 layers the two forwards' convolutions may
    # pick different fp32 kernels (oneDNN's choice depends on the thread count): differences of a few
    # 1e-3 of the largest gradient are rounding; a wrong fold is off by tens of percent.
    for n, g in separate_grads.items():
        torch.testing.assert_close(folded_grads[n], g, atol=1e-2 * g.abs().max().item(), rtol=1e-2, msg=n)


def test_the_trunk_runs_channels_last_on_cuda_and_nchw_on_cpu():
    assert trunk_memory_format(torch.device("cuda", 0)) == torch.channels_last
    assert trunk_memory_format(torch.device("cpu")) == torch.contiguous_format
    trunk, _ = build_backbone(cfg(backbone="resnet18", feature_stage=2))
    features, _ = trunk(torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last))
    assert features.is_contiguous()


def test_compile_trunk_compiles_the_trunk_in_place_keeping_parameter_names():
    plain, _ = build_backbone(cfg(backbone="resnet18", feature_stage=2))
    compiled, _ = build_backbone(cfg(backbone="resnet18", feature_stage=2, compile_trunk=True))
    assert plain._compiled_call_impl is None and compiled._compiled_call_impl is not None
    assert list(compiled.state_dict()) == list(plain.state_dict())
