"""Batch.to: the one way a batch reaches the model's device and compute dtype."""

import torch

from pixelbert.batch import IGNORE_INDEX, Batch


def cpu_batch() -> Batch:
    return Batch(images=torch.randn(2, 3, 4, 4), pixel_mask=torch.ones(2, 4, 4, dtype=torch.bool),
                 input_ids=torch.ones(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 5, dtype=torch.long),
                 mlm_labels=torch.full((2, 5), IGNORE_INDEX), meta={"keys": ["a", "b"]})


def test_to_casts_only_the_images_to_the_image_dtype():
    batch = cpu_batch().to("cpu", torch.bfloat16)
    assert batch.images.dtype == torch.bfloat16
    assert (batch.pixel_mask.dtype, batch.input_ids.dtype, batch.mlm_labels.dtype) == (torch.bool, torch.long, torch.long)


def test_to_without_an_image_dtype_keeps_the_images_dtype():
    assert cpu_batch().to("cpu").images.dtype == torch.float32


def test_to_moves_every_tensor_and_keeps_the_metadata():
    batch = cpu_batch().to("meta", torch.float16)
    tensors = [batch.images, batch.pixel_mask, batch.input_ids, batch.attention_mask, batch.mlm_labels]
    assert all(t.device.type == "meta" for t in tensors)
    assert batch.image_index is None and batch.meta == {"keys": ["a", "b"]}
