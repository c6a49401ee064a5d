"""CNN trunks by name, all from torchvision's ResNet class, with an exact pixel mask.

A batch pads images of different sizes to its largest H x W. Left alone, a convolution near
an image's border would see the neighbouring padding (non-zero after BatchNorm) where the same
image run alone sees zero padding, so its features would depend on what it was batched with.
The trunk therefore zeroes everything outside each image's valid area before every layer that
mixes neighbouring positions (3x3/7x7 convs, max-pools), and tracks each image's valid size
through every stride-2 step. The result: an image's valid features are the same, batched or
alone (eval mode; in train mode BatchNorm's batch statistics still see the padding, which
``frozen_bn`` avoids).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.ops import FrozenBatchNorm2d

from pixelbert.config import ConfigError, ModelConfig, resolve_package_path

__all__ = ["BACKBONES", "ResNetTrunk", "build_backbone", "load_backbone_weights", "read_weights", "size_after",
           "size_mask", "trunk_memory_format"]

# name -> (block, blocks per stage, groups, width_per_group)
BACKBONES: dict[str, tuple[type[nn.Module], list[int], int, int]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2], 1, 64),
    "resnet34": (BasicBlock, [3, 4, 6, 3], 1, 64),
    "resnet50": (Bottleneck, [3, 4, 6, 3], 1, 64),
    # ResNeXt-152 of the paper; width per group is unconfirmed (see the README).
    "resnext152_32x8d": (Bottleneck, [3, 8, 36, 3], 32, 8),
    "resnext152_32x4d": (Bottleneck, [3, 8, 36, 3], 32, 4),
}


def size_after(sizes: torch.Tensor, stride: int) -> torch.Tensor:
    """Valid size after a stride-2 layer of torchvision's ResNet: ceil(n / 2).

    Every stride-2 layer there (7x7/2 pad 3, 3x3/2 pad 1, 1x1/2 pad 0, max-pool 3/2 pad 1)
    gives floor((n - 1) / 2) + 1 = ceil(n / 2) outputs for n inputs.
    """
    return sizes if stride == 1 else torch.div(sizes + stride - 1, stride, rounding_mode="floor")


def size_mask(sizes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(I, 2) valid (h, w) -> (I, height, width) bool, True inside each image's valid top-left area."""
    rows = torch.arange(height, device=sizes.device)[None, :, None] < sizes[:, 0, None, None]
    cols = torch.arange(width, device=sizes.device)[None, None, :] < sizes[:, 1, None, None]
    return rows & cols


def trunk_memory_format(device: torch.device) -> torch.memory_format:
    """Layout of the trunk's activations, chosen here only: channels_last (NHWC) on CUDA, where
    cuDNN's tensor-core convolutions read it directly (NCHW input is transposed around each conv);
    NCHW on CPU, where benchmarks/bench_trunk.py measures channels_last no faster."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def _masked(x: torch.Tensor, sizes: torch.Tensor | None, cache: dict | None = None) -> torch.Tensor:
    """x with each image's padding zeroed; ``cache`` keeps one mask per resolution within a forward."""
    if sizes is None:
        return x
    key = (x.shape[-2], x.shape[-1])
    mask = None if cache is None else cache.get(key)
    if mask is None:
        mask = size_mask(sizes, *key).unsqueeze(1).to(x.dtype)
        if cache is not None:
            cache[key] = mask
    return x * mask


def _uses_batch_statistics(norm: nn.Module) -> bool:
    return isinstance(norm, nn.modules.batchnorm._BatchNorm) and (norm.training or not norm.track_running_stats)


def _conv_norm(conv: nn.Conv2d, norm: nn.Module, x: torch.Tensor, fold: bool) -> torch.Tensor:
    """norm(conv(x)), with a FrozenBatchNorm2d folded into the convolution when ``fold``.

    Frozen BatchNorm is an affine map per channel (x * scale + shift), so it can ride on the
    conv's weight and bias: one pass over the activations instead of a multiply and an add
    after the conv, forward and backward. The folded weight is rebuilt every call from the
    (trainable) conv weight, so gradients reach the conv's parameters as before.
    """
    if not (fold and isinstance(norm, FrozenBatchNorm2d)):
        return norm(conv(x))
    scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
    shift = norm.bias - norm.running_mean * scale
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    weight = conv.weight * scale.to(conv.weight.dtype).view(-1, 1, 1, 1)
    return F.conv2d(x, weight, shift.to(weight.dtype), conv.stride, conv.padding, conv.dilation, conv.groups)


class ResNetTrunk(ResNet):
    """torchvision ResNet without avgpool/fc, cut after ``layer{feature_stage}``.

    Parameter names stay those of torchvision (conv1, bn1, layer1.0.conv1, ...) so ImageNet
    checkpoints load unchanged. Two economies of pointwise memory traffic are on by default
    (``skip_1x1_remask``, ``fold_frozen_bn``); switched off, the forward is the plain one
    that masks before every block and runs each BatchNorm on its own (tests and
    benchmarks/bench_trunk.py compare the two).
    """

    def __init__(self, block, layers: list[int], feature_stage: int = 4, **kwargs) -> None:
        super().__init__(block, layers, **kwargs)
        del self.avgpool, self.fc
        for stage in range(feature_stage + 1, 5):
            delattr(self, f"layer{stage}")
        self.feature_stage = feature_stage
        self.out_channels = {1: 64, 2: 128, 3: 256, 4: 512}[feature_stage] * block.expansion
        self.stride = 2 ** (feature_stage + 1)
        self.skip_1x1_remask = True
        self.fold_frozen_bn = True

    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{i}") for i in range(1, self.feature_stage + 1)]

    def forward(self, x: torch.Tensor, sizes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (I, 3, H, W), sizes (I, 2) valid (h, w) or None (no padding).

        Returns features (I, C, H/s, W/s) (ceil), in ``trunk_memory_format`` of their device,
        and their valid sizes (I, 2) (None in, None out). Features outside the valid area are zero.
        """
        masks: dict = {}  # one padding mask per resolution
        x = _masked(x.contiguous(memory_format=trunk_memory_format(x.device)), sizes, masks)
        x = self.relu(_conv_norm(self.conv1, self.bn1, x, self.fold_frozen_bn))
        sizes = None if sizes is None else size_after(sizes, 2)
        # Post-ReLU features are >= 0, so zero padding is neutral for the max-pool.
        x = self.maxpool(_masked(x, sizes, masks))
        sizes = None if sizes is None else size_after(sizes, 2)
        for stage in self.stages():
            for block in stage:
                x, sizes = _block_forward(block, x, sizes, masks, self.skip_1x1_remask, self.fold_frozen_bn)
        return _masked(x, sizes, masks), sizes


def _block_forward(block: nn.Module, x: torch.Tensor, sizes: torch.Tensor | None, masks: dict,
                   skip_1x1_remask: bool, fold: bool):
    """BasicBlock/Bottleneck forward with the padding zeroed before each spatial conv.

    A Bottleneck's input feeds 1x1 convolutions only (conv1, the downsample): their output at a
    valid cell reads that cell alone, so padding left over from the previous block changes no
    valid value and the input re-mask can go (its 3x3 conv2 still gets a masked input; the
    trunk's output is masked last). Not while BatchNorm uses batch statistics: those would see it.
    """
    stride = block.stride
    out_sizes = None if sizes is None else size_after(sizes, stride)
    if isinstance(block, Bottleneck):
        if not (skip_1x1_remask and not _uses_batch_statistics(block.bn1)):
            x = _masked(x, sizes, masks)
        out = block.relu(_conv_norm(block.conv1, block.bn1, x, fold))
        out = block.relu(_conv_norm(block.conv2, block.bn2, _masked(out, sizes, masks), fold))
        out = _conv_norm(block.conv3, block.bn3, out, fold)
    else:
        x = _masked(x, sizes, masks)
        out = block.relu(_conv_norm(block.conv1, block.bn1, x, fold))
        out = _conv_norm(block.conv2, block.bn2, _masked(out, out_sizes, masks), fold)
    if block.downsample is None:
        identity = x
    elif isinstance(block.downsample, nn.Sequential) and len(block.downsample) == 2:  # torchvision: conv1x1, norm
        identity = _conv_norm(block.downsample[0], block.downsample[1], x, fold)
    else:
        identity = block.downsample(x)
    return block.relu(out + identity), out_sizes


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file, or of a torch file loaded weights-only (no code runs).

    An empty, truncated or corrupt file -- or a torch file that would need to run code -- is one
    ConfigError line naming it (the launchers print it and exit 2), not the loader's traceback.
    """
    try:
        if str(path).endswith(".safetensors"):
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, RuntimeError, EOFError, pickle.UnpicklingError, ValueError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        first = (str(e).strip().splitlines() or [""])[0]
        raise ConfigError(f"{path}: not a readable weights file ({type(e).__name__}: {first or 'empty'})") from None


def load_backbone_weights(trunk: ResNetTrunk, path: str) -> None:
    """Load a local ImageNet checkpoint (torchvision names, ``.pth`` or ``.safetensors``) or the
    ``model.safetensors`` of a pixelbert export (its ``backbone.*``, e.g. from the visual_words
    CNN stage); fc.* and stages beyond the trunk are ignored.

    Any other missing or unexpected key, like an unreadable file, raises ConfigError naming the
    file, so a checkpoint of the wrong architecture never loads silently.
    """
    path = resolve_package_path(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"backbone weights not found: {path}")
    state = read_weights(path)
    for key in ("state_dict", "model"):  # common wrappers around a plain state dict
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith("backbone.") for k in state):  # a pixelbert export: its trunk only
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    dropped = tuple(["fc."] + [f"layer{i}." for i in range(trunk.feature_stage + 1, 5)])
    state = {k: v for k, v in state.items() if not k.startswith(dropped)}
    result = trunk.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise ConfigError(
            f"{path}: does not match the trunk: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {result.unexpected_keys[:5]}{'...' if len(result.unexpected_keys) > 5 else ''}"
        )


def build_backbone(cfg: ModelConfig) -> tuple[ResNetTrunk, int]:
    """The trunk named by ``cfg.backbone`` and its output channels.

    Build on ``torch.device("meta")`` to count parameters of large trunks without memory.
    """
    if cfg.backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {cfg.backbone!r} (known: {', '.join(BACKBONES)})")
    block, layers, groups, width = BACKBONES[cfg.backbone]
    norm = FrozenBatchNorm2d if cfg.frozen_bn else nn.BatchNorm2d
    trunk = ResNetTrunk(
        block, layers, feature_stage=cfg.feature_stage, groups=groups, width_per_group=width, norm_layer=norm
    )
    if cfg.backbone_weights:
        load_backbone_weights(trunk, cfg.backbone_weights)
    if cfg.compile_trunk:
        trunk.compile()  # in place: parameter names, and so checkpoints, stay those of the plain trunk
    return trunk, trunk.out_channels
