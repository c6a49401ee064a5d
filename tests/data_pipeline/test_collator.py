"""Collator: padding, MLM masking, ITM negatives, task layouts, all reproducible from a seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data_pipeline.collate import Collator, pad_images
from data_pipeline.records import Sample
from pixelbert.config import DataConfig

WORDS = "dog cat car tree house red blue green small large left right runs sits on under near".split()


def samples(n, captions=2, seed=0, sizes=None, texts=None):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = sizes[i] if sizes else (8 + i % 3, 10 + i % 4)
        caps = texts[i] if texts else [" ".join(rng.choice(WORDS, 12)) for _ in range(captions)]
        out.append(Sample(key=f"k{i}", image_ids=[str(i)], texts=caps, images=[torch.randn(3, h, w)]))
    return out


def collate(tokenizer, task="pretrain", items=None, seed=0, train=True, answers=None, **data):
    cfg = DataConfig(max_text_len=32, **data)
    return Collator(tokenizer, task, cfg, train=train, answers=answers)(items, np.random.default_rng(seed))


def test_images_are_padded_bottom_right_with_a_pixel_mask():
    a, b = torch.ones(3, 4, 6), torch.ones(3, 5, 2)
    images, mask = pad_images([a, b])
    assert images.shape == (2, 3, 5, 6) and mask.shape == (2, 5, 6)
    assert mask[0, :4, :6].all() and not mask[0, 4:].any() and mask[1, :, :2].all() and not mask[1, :, 2:].any()
    assert images[~mask[:, None].expand_as(images)].abs().sum() == 0


def test_mlm_rate_and_80_10_10_rule_never_touch_special_or_padding(tokenizer):
    items = samples(400, captions=1)
    batch = collate(tokenizer, items=items, itm_negative_probability=0.0)
    plain = tokenizer([s.texts[0] for s in items], padding="longest", truncation=True, max_length=32,
                      return_special_tokens_mask=True, return_tensors="pt")
    special = plain["special_tokens_mask"].bool() | (plain["attention_mask"] == 0)
    chosen = batch.mlm_labels != -100
    assert not (chosen & special).any()
    assert torch.equal(batch.input_ids[special], plain["input_ids"][special])
    rate = chosen.sum().item() / (~special).sum().item()
    assert rate == pytest.approx(0.15, abs=0.015)
    assert torch.equal(batch.mlm_labels[chosen], plain["input_ids"][chosen])
    to_mask = (batch.input_ids[chosen] == tokenizer.mask_token_id).float().mean().item()
    kept = (batch.input_ids[chosen] == plain["input_ids"][chosen]).float().mean().item()
    assert to_mask == pytest.approx(0.8, abs=0.04) and kept == pytest.approx(0.1, abs=0.03)
    replaced = chosen & (batch.input_ids != tokenizer.mask_token_id) & (batch.input_ids != plain["input_ids"])
    assert replaced.any() and not torch.isin(batch.input_ids[replaced], torch.tensor(tokenizer.all_special_ids)).any()


def test_itm_negatives_never_pair_an_image_with_its_own_caption(tokenizer):
    # Repeated texts on purpose: a negative must differ in text, not only in image.
    pool = [["a red car"], ["a blue car"], ["a red car", "a dog"], ["a cat"]] * 10
    items = samples(40, texts=pool)
    batch = collate(tokenizer, items=items, itm_negative_probability=0.5)
    assert batch.itm_labels.float().mean().item() == pytest.approx(0.5, abs=0.2)
    for i, label in enumerate(batch.itm_labels.tolist()):
        assert (batch.meta["texts"][i] in items[i].texts) == (label == 1)
    assert (batch.mlm_labels[batch.itm_labels == 0] == -100).all()  # MLM is learnt on matching pairs only


def test_paired_negatives_give_every_image_its_caption_then_a_wrong_one(tokenizer):
    pool = [["a red car"], ["a blue car"], ["a red car", "a dog"], ["a cat"]] * 3
    items = samples(12, texts=pool)
    items.append(Sample(key="lonely", image_ids=["x"], texts=["a red car"], images=[torch.randn(3, 8, 8)]))
    batch = collate(tokenizer, items=items[-5:], itm_paired_negatives=True)
    rows = list(zip(batch.image_index.tolist(), batch.itm_labels.tolist(), batch.meta["texts"]))
    assert batch.images.shape[0] == 5 and [r[:2] for r in rows[:2]] == [(0, 1), (0, 0)]
    for image, label, text in rows:
        assert (text in items[-5:][image].texts) == (label == 1)
    assert sum(label for _, label, _ in rows) == 5 and len(rows) == 10
    assert (batch.mlm_labels[batch.itm_labels == 0] == -100).all()
    alone = collate(tokenizer, items=samples(2, texts=[["same"]] * 2), itm_paired_negatives=True)
    assert alone.itm_labels.tolist() == [1, 1]  # no wrong caption exists: positives only


def test_a_batch_without_any_other_caption_keeps_positives(tokenizer):
    batch = collate(tokenizer, items=samples(3, texts=[["same"]] * 3), itm_negative_probability=1.0)
    assert batch.itm_labels.tolist() == [1, 1, 1]


def test_same_seed_same_batch_other_seed_other_masks(tokenizer):
    a, b, c = (collate(tokenizer, items=samples(16), seed=s) for s in (3, 3, 4))
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.itm_labels, b.itm_labels)
    assert not torch.equal(a.input_ids, c.input_ids)


def test_vqa_rows_carry_dense_soft_targets(tokenizer):
    items = samples(2, captions=1)
    items[0].targets, items[1].targets = {"2": 1.0, "3": 0.3}, {"yes": 0.6, "unknown": 1.0}
    batch = collate(tokenizer, "vqa", items, answers=["yes", "2", "3"])
    assert batch.vqa_targets.tolist() == [[0.0, 1.0, pytest.approx(0.3)], [pytest.approx(0.6), 0.0, 0.0]]
    assert batch.mlm_labels is None and batch.itm_labels is None


def test_nlvr2_gives_two_rows_per_example_and_one_label_per_pair(tokenizer):
    items = samples(3, captions=1)
    for i, s in enumerate(items):
        s.images, s.label = [torch.randn(3, 6, 7), torch.randn(3, 5, 9)], i % 2
    batch = collate(tokenizer, "nlvr2", items)
    assert batch.images.shape[0] == 6 and batch.image_index.tolist() == [0, 1, 2, 3, 4, 5]
    assert batch.labels.tolist() == [0, 1, 0] and torch.equal(batch.input_ids[0], batch.input_ids[1])


def test_retrieval_training_groups_one_positive_and_wrong_captions(tokenizer):
    items = samples(4)
    batch = collate(tokenizer, "retrieval", items, retrieval_negatives=5)
    assert batch.group_size == 6 and len(batch) == 24
    assert batch.itm_labels.view(4, 6)[:, 0].tolist() == [1] * 4 and batch.itm_labels.view(4, 6)[:, 1:].sum() == 0
    for g in range(4):
        texts = batch.meta["texts"][g * 6:(g + 1) * 6]
        assert texts[0] in items[g].texts and not set(texts[1:]) & set(items[g].texts)
        assert batch.image_index[g * 6:(g + 1) * 6].tolist() == [g] * 6


def test_retrieval_evaluation_lists_every_caption(tokenizer):
    items = samples(3, captions=2)
    batch = collate(tokenizer, "retrieval", items, train=False)
    assert batch.image_index.tolist() == [0, 0, 1, 1, 2, 2] and batch.group_size is None


def test_hflip_mirrors_images_and_swaps_left_and_right(tokenizer):
    items = samples(8, texts=[["the dog on the Left of the car"]] * 8)
    originals = [s.images[0].clone() for s in items]
    batch = collate(tokenizer, "vqa", items, answers=["x"], hflip=True)
    flipped = batch.meta["flipped"]
    assert any(flipped) and not all(flipped)
    for i, f in enumerate(flipped):
        h, w = originals[i].shape[1:]
        expect = originals[i].flip(-1) if f else originals[i]
        assert torch.equal(batch.images[i, :, :h, :w], expect)
        assert batch.meta["texts"][i] == ("the dog on the Right of the car" if f else "the dog on the Left of the car")


def test_hflip_is_off_by_default_and_never_at_evaluation(tokenizer):
    assert not any(collate(tokenizer, "vqa", samples(8), answers=["x"]).meta["flipped"])
    assert not any(collate(tokenizer, "vqa", samples(8), answers=["x"], train=False, hflip=True).meta["flipped"])


def test_questions_of_one_image_share_one_image_in_the_batch(tokenizer):
    image = torch.randn(3, 8, 8)
    items = [Sample(key="a", image_ids=["img1"], texts=[f"question {i}"], targets={"x": 1.0}, images=[image.clone()])
             for i in range(3)]
    items.append(Sample(key="b", image_ids=["img2"], texts=["other"], targets={"x": 1.0}, images=[torch.randn(3, 8, 8)]))
    batch = collate(tokenizer, "vqa", items, answers=["x"])
    assert batch.images.shape[0] == 2 and batch.image_index.tolist() == [0, 0, 0, 1]
    assert batch.meta["image_ids"] == ["img1", "img2"] and torch.equal(batch.images[0], image)


def test_special_token_strings_in_a_text_are_tokenized_as_plain_words(tokenizer):
    text = "is the [MASK] left of the [SEP] [CLS] [PAD] [UNK] sign?"
    items = [Sample(key="a", image_ids=["1"], texts=[text], targets={"x": 1.0}, images=[torch.randn(3, 8, 8)])]
    ids = collate(tokenizer, "vqa", items, answers=["x"]).input_ids[0].tolist()
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert not set(tokenizer.all_special_ids) & set(ids[1:-1])
    assert tokenizer.convert_ids_to_tokens(ids[3:6]) == ["[", "mask", "]"]


def test_mlm_never_masks_or_labels_padding_on_a_padded_batch(tokenizer):
    # Captions of very different lengths: most rows end in [PAD]; a high rate makes every
    # real token likely to be chosen, so a pad position that may be chosen will be.
    items = samples(24, texts=[[" ".join(["dog"] * (1 + i % 12))] for i in range(24)])
    batch = collate(tokenizer, items=items, itm_negative_probability=0.0, mlm_probability=0.9)
    padding = batch.attention_mask == 0
    assert padding.sum() > 100
    assert (batch.mlm_labels[padding] == -100).all()
    assert (batch.input_ids[padding] == tokenizer.pad_token_id).all()
    assert (batch.mlm_labels[~padding] != -100).any()


def test_itm_negatives_never_use_a_caption_of_another_sample_of_the_same_image(tokenizer):
    # Two samples of image "a" (two annotations of one picture) with different captions: each is
    # a caption of image "a", so it can never be that image's wrong caption.
    texts = {"a": ["a red car", "a car parked in the street"], "b": ["two cats sleep"]}
    items = [Sample(key=f"k{i}", image_ids=[image], texts=[text], images=[torch.randn(3, 8, 8)])
             for i, (image, text) in enumerate([("a", texts["a"][0]), ("a", texts["a"][1]), ("b", texts["b"][0])])]
    for seed in range(20):
        batch = collate(tokenizer, items=items, seed=seed, itm_negative_probability=1.0)
        for row, label in enumerate(batch.itm_labels.tolist()):
            image = items[row].image_ids[0]
            assert (batch.meta["texts"][row] in texts[image]) == (label == 1), (seed, row)
    alone = collate(tokenizer, items=items[:2], itm_negative_probability=1.0)
    assert alone.itm_labels.tolist() == [1, 1]  # the batch holds no other image: positives only


def test_an_nlvr2_flip_mirrors_and_swaps_the_two_images_as_it_swaps_left_and_right(tokenizer):
    text = "the left image has more dogs than the right image"
    items = [Sample(key=f"k{i}", image_ids=[f"{i}-img0", f"{i}-img1"], texts=[text], label=i % 2,
                    images=[torch.randn(3, 6, 7), torch.randn(3, 6, 7)]) for i in range(8)]
    originals = [[im.clone() for im in s.images] for s in items]
    batch = collate(tokenizer, "nlvr2", items, hflip=True)
    flipped = batch.meta["flipped"]
    assert any(flipped) and not all(flipped)
    rows = batch.row_images()
    for i, f in enumerate(flipped):
        left, right = batch.images[rows[2 * i]], batch.images[rows[2 * i + 1]]
        if f:  # the mirrored scene: the old right image, mirrored, is now on the left
            assert torch.equal(left, originals[i][1].flip(-1)) and torch.equal(right, originals[i][0].flip(-1))
            assert batch.meta["texts"][2 * i] == "the right image has more dogs than the left image"
        else:
            assert torch.equal(left, originals[i][0]) and torch.equal(right, originals[i][1])
            assert batch.meta["texts"][2 * i] == text
