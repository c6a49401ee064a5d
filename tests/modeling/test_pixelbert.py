"""PixelBert forward: joint sequence, masks, pixel sampling modes, one CNN pass per image."""

import pytest
import torch

from model_helpers import make_batch, tiny_model_config
from pixelbert import PixelBertOutput, build_model
from pixelbert.config import Config


def test_forward_joins_text_and_all_pixels_in_eval(tiny_model):
    batch = make_batch([(64, 64), (64, 64)])
    out = tiny_model(batch, sample_pixels=True)  # eval mode: sampling is ignored
    assert isinstance(out, PixelBertOutput)
    # 64 px / stride 8 / extra pool 2 = 4 x 4 pixel tokens after 8 text tokens.
    assert out.hidden.shape == (2, 8 + 16, 64)
    assert out.text_length == 8 and out.pixel_index is None
    assert out.pixel_grid.shape == (2, 4, 4) and out.attention_mask.all()
    assert tiny_model.pixel_stride == 16


def test_training_with_sampling_feeds_k_pixels_per_image():
    model = build_model(tiny_model_config(pixel_samples=6)).train()
    batch = make_batch([(64, 64), (40, 24)])  # second image: 3 x 2 = 6 valid cells
    out = model(batch, sample_pixels=True, generator=torch.Generator().manual_seed(0))
    assert out.hidden.shape == (2, 8 + 6, 64)
    assert out.pixel_index.shape == (2, 6)
    grid = out.pixel_grid.flatten(1)
    assert grid.gather(1, out.pixel_index).all()  # only valid cells were drawn
    assert out.attention_mask[:, 8:].all()


def test_training_without_sampling_sees_all_pixels():
    model = build_model(tiny_model_config()).train()
    out = model(make_batch([(64, 64)]), sample_pixels=False)
    assert out.pixel_index is None and out.hidden.shape[1] == 8 + 16


def test_pixel_sampling_off_keeps_every_pixel_when_sampling_is_asked_for():
    model = build_model(tiny_model_config(pixel_samples=6, pixel_sampling=False)).train()
    out = model(make_batch([(64, 64)]), sample_pixels=True, generator=torch.Generator().manual_seed(0))
    assert out.pixel_index is None and out.hidden.shape[1] == 8 + 16


def test_sampled_pixels_are_reproducible_and_change_per_step():
    model = build_model(tiny_model_config(pixel_samples=4)).train()
    batch = make_batch([(64, 64)])
    a = model(batch, sample_pixels=True, generator=torch.Generator().manual_seed(3)).pixel_index
    g = torch.Generator().manual_seed(3)
    b = model(batch, sample_pixels=True, generator=g).pixel_index
    c = model(batch, sample_pixels=True, generator=g).pixel_index
    assert torch.equal(a, b) and not torch.equal(b, c)


def test_an_image_gives_the_same_outputs_batched_with_a_larger_image_or_alone(tiny_model):
    """Joint mask + exact feature mask: padding (pixels and pixel tokens) changes nothing."""
    small = make_batch([(40, 24)], seed=1)
    batched = make_batch([(40, 24), (64, 64)], seed=1)
    assert torch.equal(batched.images[0, :, :40, :24], small.images[0])
    batched.input_ids[0] = small.input_ids[0]
    alone = tiny_model(small)
    both = tiny_model(batched)
    assert alone.hidden.shape[1] == 8 + 3 * 2 and both.hidden.shape[1] == 8 + 4 * 4
    valid = both.attention_mask[0]
    assert valid.sum() == alone.hidden.shape[1]
    torch.testing.assert_close(both.hidden[0, valid], alone.hidden[0], atol=1e-5, rtol=1e-4)
    assert torch.equal(both.pixel_grid[0].sum(), alone.pixel_grid[0].sum())
    # The padded image's valid cells are exactly the feature map of the image alone.
    assert both.pixel_grid[0, :3, :2].all() and both.pixel_grid[0].sum() == 6


def test_text_padding_changes_no_real_position(tiny_model):
    short = make_batch([(64, 64)], text_lengths=[5], seq_len=5)
    padded = make_batch([(64, 64)], text_lengths=[5], seq_len=9)
    a, b = tiny_model(short), tiny_model(padded)
    torch.testing.assert_close(b.hidden[0, :5], a.hidden[0, :5], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(b.pixel_hidden, a.pixel_hidden, atol=1e-5, rtol=1e-4)
    assert b.attention_mask[0].tolist() == [True] * 5 + [False] * 4 + [True] * 16


def test_padded_pixel_tokens_are_hidden_from_every_real_position(tiny_model):
    """Scrambling the padded tokens' content leaves all real outputs unchanged."""
    batch = make_batch([(40, 24), (64, 64)])
    pixels = tiny_model.encode_images(batch.images, batch.pixel_mask)
    out = tiny_model.forward_tokens(batch.input_ids, batch.attention_mask, pixels)
    pixels.tokens[0, ~pixels.mask[0]] = 1e3 * torch.randn(int((~pixels.mask[0]).sum()), 64)
    scrambled = tiny_model.forward_tokens(batch.input_ids, batch.attention_mask, pixels)
    valid = out.attention_mask
    torch.testing.assert_close(scrambled.hidden[valid], out.hidden[valid])


def test_the_cnn_runs_once_for_an_image_with_many_captions(tiny_model):
    calls = []
    hook = tiny_model.backbone.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        out = tiny_model(make_batch([(64, 64), (48, 48)], image_index=[0, 0, 0, 1, 1]))
    finally:
        hook.remove()
    assert calls == [2] and out.hidden.shape[0] == 5
    assert out.image_index.tolist() == [0, 0, 0, 1, 1]
    torch.testing.assert_close(out.pixel_hidden.shape, (5, 16, 64))


def test_cached_pixel_tokens_give_the_same_output_as_the_images(tiny_model):
    batch = make_batch([(64, 64), (48, 40)], image_index=[1, 0, 1])
    pixels = tiny_model.encode_images(batch.images, batch.pixel_mask)
    direct = tiny_model(batch)
    cached = tiny_model(batch, pixels=pixels)
    assert torch.equal(direct.hidden, cached.hidden)


def test_head_outputs_have_the_documented_shapes(tiny_model):
    out = tiny_model(make_batch([(64, 64), (48, 48)], image_index=[0, 1, 0, 1]))
    assert tiny_model.mlm_logits(out).shape == (4, 8, 30522)
    positions = torch.zeros(4, 8, dtype=torch.bool)
    positions[0, 2] = positions[3, 4] = True
    assert tiny_model.mlm_logits(out, positions).shape == (2, 30522)
    assert tiny_model.itm_logits(out).shape == (4, 2)
    assert tiny_model.retrieval_scores(out).shape == (4,)
    assert tiny_model.vqa_logits(out).shape == (4, 5)
    assert tiny_model.nlvr2_logits(out).shape == (2, 2)


def test_retrieval_score_ranks_like_the_itm_match_probability(tiny_model):
    out = tiny_model(make_batch([(64, 64)] * 4))
    prob = tiny_model.itm_logits(out).softmax(-1)[:, 1]
    scores = tiny_model.retrieval_scores(out)
    assert torch.equal(prob.argsort(), scores.argsort())


def test_nlvr2_head_sees_both_images_of_a_sentence(tiny_model):
    out = tiny_model(make_batch([(64, 64), (48, 48), (32, 32)], image_index=[0, 1, 0, 2]))
    logits = tiny_model.nlvr2_logits(out)
    swapped = tiny_model(make_batch([(64, 64), (48, 48), (32, 32)], image_index=[0, 1, 0, 1]))
    assert torch.allclose(tiny_model.nlvr2_logits(swapped)[0], logits[0], atol=1e-5)
    assert not torch.allclose(tiny_model.nlvr2_logits(swapped)[1], logits[1], atol=1e-5)


def test_mean_pooling_feeds_the_heads_the_mean_of_attended_tokens_only():
    model = build_model(tiny_model_config(pooling="mean")).eval()
    batch = make_batch([(64, 64), (40, 24)], text_lengths=[8, 5])  # padding in text and in pixels
    out = model(batch)
    mask = out.attention_mask
    expected = torch.stack([out.hidden[i][mask[i]].mean(0) for i in range(2)])
    torch.testing.assert_close(model.pooled(out), expected)
    torch.testing.assert_close(model.vqa_logits(out), model.heads["vqa"](expected))
    cls_model = build_model(tiny_model_config()).eval()
    assert torch.equal(cls_model.pooled(cls_model(batch)), cls_model(batch).cls)  # the paper's default


def test_a_missing_head_is_a_clear_error():
    model = build_model(tiny_model_config(heads=["itm"])).eval()
    out = model(make_batch([(32, 32)]))
    with pytest.raises(KeyError, match="no 'vqa' head"):
        model.vqa_logits(out)


def test_attentions_are_returned_per_layer_and_ignore_padding(tiny_model):
    out = tiny_model(make_batch([(40, 24), (64, 64)]), output_attentions=True)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 4, 24, 24)
    padded = ~out.attention_mask[0]
    assert out.attentions[1][0][..., padded].abs().max() == 0
    assert tiny_model.bert.config._attn_implementation == "sdpa"  # restored afterwards


def test_build_model_accepts_a_full_config_or_its_model_section():
    cfg = Config(model=tiny_model_config(heads=["itm"]))
    assert list(build_model(cfg).heads) == ["itm"]
    assert list(build_model(cfg.model).heads) == ["itm"]


def test_parameter_groups_split_cnn_from_transformer(tiny_model):
    groups = tiny_model.parameter_groups()
    assert groups["cnn"] and all(n.startswith("backbone.") for n in groups["cnn"])
    total = sum(1 for p in tiny_model.parameters() if p.requires_grad)
    assert len(groups["cnn"]) + len(groups["transformer"]) == total


@pytest.mark.parametrize("name, trunk_millions", [("r50", 23.5), ("x152", 120.0)])
def test_paper_configs_build_bert_base_on_their_trunk(name, trunk_millions):
    from pixelbert import load_config

    with torch.device("meta"):  # no memory, no compute: just the architecture
        model = build_model(load_config(f"configs/{name}.json"))
    trunk = sum(p.numel() for p in model.backbone.parameters()) / 1e6  # frozen BN: no BN parameters
    assert round(trunk, 1) == trunk_millions
    assert model.hidden_size == 768 and len(model.bert.encoder.layer) == 12
    assert model.pixel_stride == 64 and model.config.pixel_samples == 100


def test_tiny_config_builds_a_working_minilm_model():
    from pixelbert import load_config

    model = build_model(load_config("configs/tiny.json")).eval()
    out = model(make_batch([(64, 64), (64, 48)]))
    assert model.hidden_size == 384 and len(model.bert.encoder.layer) == 2
    assert out.hidden.shape == (2, 8 + 16, 384) and torch.isfinite(out.hidden).all()
