"""The model-based evaluation loop: VQA / NLVR2 scoring, and all-pairs retrieval with the CNN run once per image."""

from __future__ import annotations

import pytest
import torch

from pixelbert.batch import Batch
from pixelbert.evaluation.pair_scoring import candidate_mask, combine, spread_index
from pixelbert.evaluation.runner import EvalOptions, evaluate, make_eval_fn, question_score


def _batch(sizes, image_index, texts, seed=0, **extra) -> Batch:
    """Images of the given sizes (padded bottom/right) and text rows of random ids of the given lengths."""
    g = torch.Generator().manual_seed(seed)
    H, W = max(h for h, _ in sizes), max(w for _, w in sizes)
    images, mask = torch.zeros(len(sizes), 3, H, W), torch.zeros(len(sizes), H, W, dtype=torch.bool)
    for i, (h, w) in enumerate(sizes):
        images[i, :, :h, :w] = torch.randn(3, h, w, generator=g)
        mask[i, :h, :w] = True
    L = max(texts)
    ids, att = torch.zeros(len(texts), L, dtype=torch.long), torch.zeros(len(texts), L, dtype=torch.long)
    for r, n in enumerate(texts):
        ids[r, :n] = torch.randint(1000, 3000, (n,), generator=g)
        ids[r, 0], ids[r, n - 1] = 101, 102
        att[r, :n] = 1
    return Batch(images=images, pixel_mask=mask, input_ids=ids, attention_mask=att,
                 image_index=torch.tensor(image_index), **extra)


def _retrieval_loader():
    """Two eval batches: 2 + 1 images of different sizes, 2 or 3 captions each (like the collator lays them out)."""
    a = _batch([(64, 64), (48, 64)], [0, 0, 1, 1, 1], [6, 8, 5, 7, 8], seed=1, meta={"image_ids": ["a", "b"]})
    b = _batch([(64, 48)], [0, 0], [9, 4], seed=2, meta={"image_ids": ["c"]})
    return [a, b]


def test_retrieval_scores_every_pair_like_a_direct_forward_with_one_cnn_pass_per_image(tiny_model):
    loader = _retrieval_loader()
    calls = []
    hook = tiny_model.backbone.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        result = evaluate(tiny_model, loader, "retrieval", EvalOptions(pair_batch=2))
    finally:
        hook.remove()
    assert calls == [2, 1]  # the CNN saw each image once, not once per pair
    scores = result.predictions["scores"]
    assert scores.shape == (3, 7)
    assert result.predictions["text_to_image"].tolist() == [0, 0, 1, 1, 1, 2, 2]
    # Reference: each image alone (no padding) with every caption, through the full model.
    images = [(b, i) for b in loader for i in range(b.images.shape[0])]
    rows = [(b, r) for b in loader for r in range(len(b))]
    L = max(b.input_ids.shape[1] for b in loader)
    ids = torch.zeros(len(rows), L, dtype=torch.long)
    att = torch.zeros(len(rows), L, dtype=torch.long)
    for t, (b, r) in enumerate(rows):
        n = int(b.attention_mask[r].sum())
        ids[t, :n], att[t, :n] = b.input_ids[r, :n], 1
    with torch.no_grad():
        for i, (b, k) in enumerate(images):
            alone = Batch(images=b.images[k : k + 1], pixel_mask=b.pixel_mask[k : k + 1], input_ids=ids,
                          attention_mask=att, image_index=torch.zeros(len(rows), dtype=torch.long))
            expected = tiny_model.retrieval_scores(tiny_model(alone))
            torch.testing.assert_close(scores[i], expected, atol=1e-4, rtol=1e-4)
    assert set(result.metrics) >= {"txt_r1", "img_r10", "r_mean", "num_images", "num_texts"}


def test_retrieval_first_stage_with_k_covering_everything_changes_nothing(tiny_model):
    full = evaluate(tiny_model, _retrieval_loader(), "retrieval").metrics
    filtered = evaluate(tiny_model, _retrieval_loader(), "retrieval", EvalOptions(retrieval_topk=7)).metrics
    assert filtered == full


def _top(scores: torch.Tensor, k: int, dim: int) -> list:
    return scores.topk(k, dim=dim).indices.tolist()


def test_retrieval_first_stage_keeps_each_images_and_captions_top_k_in_the_all_pairs_order(tiny_model):
    # First stage with every pixel (16 at 64 x 64): the cheap scores are the exact ones, so the
    # first k of every row and column must come out as scoring all pairs orders them.
    full = evaluate(tiny_model, _retrieval_loader(), "retrieval")
    k = 2  # below the 7 captions and the 3 images
    two = evaluate(tiny_model, _retrieval_loader(), "retrieval", EvalOptions(retrieval_topk=k, first_stage_pixels=16))
    scores, exact = two.predictions["scores"], full.predictions["scores"]
    assert _top(scores, k, 1) == _top(exact, k, 1) and _top(scores, k, 0) == _top(exact, k, 0)
    assert (two.metrics["txt_r1"], two.metrics["img_r1"]) == (full.metrics["txt_r1"], full.metrics["img_r1"])


def test_retrieval_first_stage_rescores_only_the_candidate_pairs_with_every_pixel(tiny_model):
    full = evaluate(tiny_model, _retrieval_loader(), "retrieval").predictions["scores"]
    pairs = []
    forward_tokens = tiny_model.forward_tokens

    def counting(ids, *args, **kwargs):
        pairs.append(ids.shape[0])
        return forward_tokens(ids, *args, **kwargs)

    tiny_model.forward_tokens = counting
    try:
        options = EvalOptions(retrieval_topk=1, first_stage_pixels=2)
        result = evaluate(tiny_model, _retrieval_loader(), "retrieval", options)
    finally:
        del tiny_model.forward_tokens
    coarse, fine = sum(pairs[:3]), sum(pairs[3:])  # pair_batch 256: one call per image and stage
    assert len(pairs) == 6 and coarse == 3 * 7
    # Each image's best caption and each caption's best image: at least 7, at most 3 + 7 pairs.
    assert 7 <= fine <= 10
    # Rescored pairs hold their all-pixel score plus one common lift, above every other pair.
    scores = result.predictions["scores"]
    lift = scores - full
    top = scores.flatten().argmax()
    rescored = (lift - lift.flatten()[top]).abs() < 1e-4
    assert int(rescored.sum()) == fine and scores[rescored].min() > scores[~rescored].max()


def test_candidates_are_each_rows_and_each_columns_top_k():
    coarse = torch.tensor([[5.0, 1.0, 0.0], [4.0, 3.0, 2.0]])
    cand = candidate_mask(coarse, 1)
    # row tops: (0,0), (1,0); column tops: (0,0), (1,1), (1,2)
    assert cand.tolist() == [[True, False, False], [True, True, True]]


def test_rescored_candidates_rank_above_the_rest_in_their_own_order():
    coarse = torch.tensor([[9.0, 8.0, 7.0]])
    fine = torch.tensor([[-5.0, -1.0, 100.0]])
    cand = torch.tensor([[True, True, False]])
    out = combine(coarse, fine, cand)
    assert out[0, 1] > out[0, 0] > out[0, 2]  # fine order among candidates, all above the non-candidate


def test_spread_index_keeps_all_positions_when_few_and_spreads_otherwise():
    assert spread_index(3, 16).tolist() == [0, 1, 2]
    assert spread_index(9, 3).tolist() == [0, 4, 8]


class _FixedVQA(torch.nn.Module):
    """Answers question i with answer picks[i]; stands in for PixelBert in the VQA loop."""

    def __init__(self, picks):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.picks = picks

    def forward(self, batch, sample_pixels=False):
        return batch

    def vqa_logits(self, batch):
        return torch.nn.functional.one_hot(torch.tensor(self.picks[: len(batch)]), 3).float() + self.w


def _vqa_batch(answers):
    b = _batch([(8, 8)] * len(answers), list(range(len(answers))), [4] * len(answers))
    b.meta = {"question_ids": list(range(len(answers))), "answers": answers}
    return b


def test_vqa_accuracy_is_the_official_score_over_human_answers():
    humans = [["red"] * 2 + ["blue"] * 8, ["two"] * 10]
    model = _FixedVQA([0, 2])
    result = evaluate(model, [_vqa_batch(humans)], "vqa", EvalOptions(answers=["red", "blue", "2"]))
    # "red": 2 of 10 humans agree, 0.6. "2": ten identical human answers are scored as given
    # (the official tool normalises them only when they differ), and "two" is not "2": 0.
    assert result.metrics["vqa_accuracy"] == pytest.approx(100 * (0.6 + 0.0) / 2)
    assert result.predictions == {0: "red", 1: "2"}


def test_a_one_annotator_dataset_scores_exact_match():
    assert question_score("Blue", ["blue"]) == 1.0
    assert question_score("red", ["blue"]) == 0.0


def test_vqa_without_human_answers_predicts_but_reports_no_accuracy():
    result = evaluate(_FixedVQA([1]), [_vqa_batch([None])], "vqa", EvalOptions(answers=["a", "b", "c"]))
    assert result.metrics == {"num_questions": 1.0} and result.predictions == {0: "b"}


class _FixedNLVR2(torch.nn.Module):
    def __init__(self, picks):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.picks = picks

    def forward(self, batch, sample_pixels=False):
        return batch

    def nlvr2_logits(self, batch):
        return torch.nn.functional.one_hot(torch.tensor(self.picks), 2).float() + self.w


def test_nlvr2_accuracy_and_consistency_over_pairs():
    b = _batch([(8, 8)] * 6, list(range(6)), [4] * 6, labels=torch.tensor([1, 0, 1]))
    b.meta = {"identifiers": ["dev-1-0-0", "dev-1-1-0", "dev-2-0-0"]}
    seen = []
    fn = make_eval_fn("nlvr2", on_result=seen.append)
    metrics = fn(_FixedNLVR2([1, 1, 1]), [b])
    assert metrics["nlvr2_accuracy"] == pytest.approx(200 / 3)
    assert metrics["nlvr2_consistency"] == pytest.approx(50.0)  # sentence dev-1-*-0 has one wrong pair
    assert seen == [metrics]


def test_unknown_task_is_refused(tiny_model):
    with pytest.raises(ValueError, match="no evaluation for task 'pretrain'"):
        evaluate(tiny_model, [], "pretrain")
