"""Pixel tokens: random pixel sampling, extra pool mask arithmetic, 2-D position embedding."""

import pytest
import torch

from model_helpers import tiny_model_config
from pixelbert.modeling.visual import PixelEmbedding, gather_pixels, sample_pixel_index, trunk_sizes, valid_sizes


def masks_with_valid_counts(counts: list[int], n: int = 64) -> torch.Tensor:
    """(I, n) masks whose valid positions are scattered (every other slot first), not a prefix."""
    order = torch.cat([torch.arange(0, n, 2), torch.arange(1, n, 2)])
    mask = torch.zeros(len(counts), n, dtype=torch.bool)
    for i, c in enumerate(counts):
        mask[i, order[:c]] = True
    return mask


def test_sampling_draws_min_k_valid_distinct_pixels_per_image():
    mask = masks_with_valid_counts([64, 30, 10, 3, 0])
    k = 10
    index = sample_pixel_index(mask, k, torch.Generator().manual_seed(0))
    assert index.shape == (5, k)
    chosen_valid = mask.gather(1, index)
    for i, valid in enumerate(mask.sum(1).tolist()):
        n = min(k, valid)
        assert chosen_valid[i].sum() == n
        assert chosen_valid[i, :n].all()  # valid ones come first
        assert len(set(index[i].tolist())) == k  # without replacement
        assert mask[i, index[i, :n]].all()  # never a padded pixel among the kept ones


def test_an_image_with_fewer_valid_pixels_than_k_keeps_all_of_them():
    mask = masks_with_valid_counts([4])
    index = sample_pixel_index(mask, 10, torch.Generator().manual_seed(0))
    assert set(index[0, :4].tolist()) == set(mask[0].nonzero().flatten().tolist())


def test_k_larger_than_the_grid_returns_the_whole_grid():
    index = sample_pixel_index(torch.ones(2, 5, dtype=torch.bool), 100)
    assert index.shape == (2, 5) and index.sort(dim=1).values.tolist() == [list(range(5))] * 2


def test_sampling_differs_per_image_and_per_step():
    mask = torch.ones(2, 64, dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    first, second = sample_pixel_index(mask, 10, g), sample_pixel_index(mask, 10, g)
    assert set(first[0].tolist()) != set(first[1].tolist())
    assert set(first[0].tolist()) != set(second[0].tolist())


def test_sampling_is_reproducible_from_the_seed():
    mask = masks_with_valid_counts([64, 20])
    a = sample_pixel_index(mask, 10, torch.Generator().manual_seed(7))
    b = sample_pixel_index(mask, 10, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_sampling_covers_every_valid_pixel_over_many_draws():
    """Uniform over valid pixels: every valid pixel gets drawn, no padded one ever is."""
    mask = masks_with_valid_counts([20], n=40)
    g = torch.Generator().manual_seed(0)
    seen = torch.cat([sample_pixel_index(mask, 5, g)[0] for _ in range(200)])
    assert set(seen.tolist()) == set(mask[0].nonzero().flatten().tolist())


def test_valid_sizes_reads_each_images_rectangle_and_rejects_other_shapes():
    mask = torch.zeros(2, 6, 5, dtype=torch.bool)
    mask[0, :4, :3] = True
    mask[1] = True
    assert valid_sizes(mask).tolist() == [[4, 3], [6, 5]]
    mask[0, 5, 4] = True
    with pytest.raises(ValueError, match="top-left rectangle"):
        valid_sizes(mask)


@pytest.mark.parametrize("h, w", [(5, 3), (4, 4), (1, 1), (7, 2)])
def test_extra_pool_valid_size_equals_the_pooled_map_of_the_image_alone(h, w):
    embed = PixelEmbedding(8, 16, tiny_model_config(extra_pool=True)).eval()
    alone = embed(torch.rand(1, 8, h, w))
    assert alone.grid.shape == (1, (h + 1) // 2, (w + 1) // 2) and alone.grid.all()
    features = torch.zeros(2, 8, 8, 8)
    features[0, :, :h, :w] = torch.rand(8, h, w)  # zero outside: as the trunk delivers it
    batched = embed(features, torch.tensor([[h, w], [8, 8]]))
    assert batched.grid[0].sum() == alone.grid.sum()
    assert batched.grid[0, : (h + 1) // 2, : (w + 1) // 2].all()


def test_extra_pool_at_a_border_sees_only_the_images_pixels():
    embed = PixelEmbedding(4, 16, tiny_model_config(extra_pool=True)).eval()
    features = torch.rand(1, 4, 3, 3)
    alone = embed(features)
    padded = torch.zeros(1, 4, 6, 6)
    padded[:, :, :3, :3] = features
    batched = embed(padded, torch.tensor([[3, 3]]))
    valid = batched.mask[0]
    torch.testing.assert_close(batched.tokens[0, valid], alone.tokens[0])


def test_tokens_are_projection_plus_the_shared_semantic_embedding():
    embed = PixelEmbedding(4, 16, tiny_model_config(extra_pool=False, visual_dropout=0.0)).eval()
    torch.nn.init.normal_(embed.semantic)
    features = torch.rand(1, 4, 2, 3)
    out = embed(features)
    expected = embed.norm(embed.proj(features.flatten(2).transpose(1, 2)) + embed.semantic)
    torch.testing.assert_close(out.tokens, expected)
    assert out.index is None and out.mask.all() and out.tokens.shape == (1, 6, 16)


def test_position_embedding_is_off_by_default_and_distinguishes_cells_when_on():
    assert PixelEmbedding(4, 16, tiny_model_config()).row_embed is None
    embed = PixelEmbedding(4, 16, tiny_model_config(extra_pool=False, pos_embed_2d=True, pos_embed_max=4)).eval()
    same = torch.ones(1, 4, 2, 2)  # identical features in every cell
    tokens = embed(same).tokens[0]
    assert not torch.allclose(tokens[0], tokens[3])
    with pytest.raises(ValueError, match="pos_embed_max"):
        embed(torch.ones(1, 4, 5, 2))


def test_sampled_tokens_keep_their_cells_position_embedding():
    embed = PixelEmbedding(4, 16, tiny_model_config(extra_pool=False, pos_embed_2d=True)).eval()
    features = torch.rand(1, 4, 4, 4)
    full = embed(features)
    sampled = embed(features, num_samples=5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sampled.tokens[0], full.tokens[0, sampled.index[0]])


def test_trunk_sizes_are_none_for_an_unpadded_batch_and_the_valid_sizes_otherwise():
    mask = torch.ones(2, 6, 5, dtype=torch.bool)
    assert trunk_sizes(None) is None and trunk_sizes(mask) is None
    mask[1, 4:] = False
    assert trunk_sizes(mask).tolist() == [[6, 5], [4, 5]]


@pytest.mark.parametrize("sampled", [True, False])
def test_pixels_gathered_from_a_channels_last_map_equal_those_of_the_nchw_map(sampled):
    features = torch.randn(3, 8, 4, 5)
    every = torch.ones(3, 20, dtype=torch.bool)
    index = sample_pixel_index(every, 7, torch.Generator().manual_seed(0)) if sampled else None
    nchw = gather_pixels(features, index)
    rows = gather_pixels(features.contiguous(memory_format=torch.channels_last), index)
    expected = features.flatten(2).transpose(1, 2)  # (I, N, C)
    if sampled:
        expected = torch.stack([expected[i, index[i]] for i in range(3)])
    assert torch.equal(nchw, expected) and torch.equal(rows, expected)


def test_sampled_tokens_are_the_same_whatever_the_trunks_memory_format():
    embed = PixelEmbedding(8, 16, tiny_model_config(extra_pool=True, visual_dropout=0.0)).eval()
    features = torch.rand(2, 8, 6, 7)
    sizes = torch.tensor([[6, 7], [5, 3]])
    features[1, :, 5:], features[1, :, :, 3:] = 0, 0
    a = embed(features, sizes, num_samples=5, generator=torch.Generator().manual_seed(3))
    b = embed(features.contiguous(memory_format=torch.channels_last), sizes, num_samples=5,
              generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.index, b.index) and torch.equal(a.mask, b.mask)
    torch.testing.assert_close(a.tokens, b.tokens)
