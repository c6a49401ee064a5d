"""CNN pre-training on captions: from the image alone, which words does its caption use?

The paper starts its CNN from ImageNet weights, so the trunk already sees shapes and objects
before Pixel-BERT's pre-training begins. Without such weights (nothing is downloaded here),
a random trunk trained only through MLM / ITM / VQA learns the easiest image property first
(colour on easy-VQA) and the transformer path then never gets it to learn the next one
(shape): README "The easy-VQA result" has the measurements. This stage stands in for the
ImageNet initialisation, on the pre-training captions themselves: a linear head on the CNN's
mean feature predicts the caption's word pieces (one softmax against the caption's words
weighted equally; weakly supervised word prediction as in Joulin et al. 2016). A linear
head over an average can only name what the CNN itself encodes, so the trunk has to learn
every property the captions mention. Its export's ``backbone.*`` then loads as
``model.backbone_weights``, the slot ImageNet weights would take.

Only matching image-caption rows count (``itm_labels == 1`` when the batch has them), and
masked tokens are read back from ``mlm_labels``, so the caption is the original one whatever
the collator did for MLM / ITM.
"""

from __future__ import annotations

import torch

from pixelbert.batch import IGNORE_INDEX, Batch

__all__ = ["VisualWordsTask", "caption_word_targets"]


def caption_word_targets(batch: Batch, vocab_size: int, special_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows (R,), targets (R, V)): the matching rows and, for each, its caption's distinct word
    pieces (special tokens excluded) weighted equally (each row sums to 1). Rows with no word
    are left out."""
    ids = batch.input_ids
    if batch.mlm_labels is not None:  # the collator's [MASK]s and random swaps: the original token
        ids = torch.where(batch.mlm_labels != IGNORE_INDEX, batch.mlm_labels, ids)
    keep = batch.attention_mask.bool()
    for special in special_ids:
        keep &= ids != special
    hot = torch.zeros(ids.shape[0], vocab_size, device=ids.device)
    hot.scatter_add_(1, ids.masked_fill(~keep, 0), keep.float())  # dropped tokens add 0
    hot.clamp_(max=1.0)  # a repeated word counts once
    rows = hot.sum(1) > 0
    if batch.itm_labels is not None:
        rows &= batch.itm_labels == 1
    rows = rows.nonzero().squeeze(1)
    targets = hot[rows]
    return rows, targets / targets.sum(1, keepdim=True)


class VisualWordsTask:
    """Loss: cross-entropy of ``image_words_logits`` (one softmax over the vocabulary) against the
    caption's words; metrics ``words_loss``, ``words_top1`` (the top word is in the caption),
    ``words_rprec`` (R-precision: of the caption's R words, the share among the top R)."""

    name = "visual_words"
    summary_metrics = ("words_top1", "words_rprec")  # what the launcher's last line reports

    def __init__(self, vocab_size: int, special_ids: list[int]):
        self.vocab_size = vocab_size
        self.special_ids = sorted(set(special_ids))

    @classmethod
    def from_config(cls, config) -> "VisualWordsTask":
        from pixelbert.modeling.tokenizer import load_tokenizer

        tok = load_tokenizer(config.model)
        return cls(len(tok), tok.all_special_ids)

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rows, targets = caption_word_targets(batch, self.vocab_size, self.special_ids)
        logits = model.image_words_logits(batch.images, batch.pixel_mask).float()  # (I, V), one per image
        if logits.shape[1] != self.vocab_size:
            raise ValueError(f"visual_words: the words head has {logits.shape[1]} outputs, the tokenizer "
                             f"{self.vocab_size} words")
        logits = logits[batch.row_images()[rows]]
        if not len(rows):  # no matching caption in this batch: keep the graph, add nothing
            zero = logits.sum() * 0.0
            return zero, {"words_loss": zero.detach(), "words_top1": zero.detach(), "words_rprec": zero.detach()}
        loss = -(targets * logits.log_softmax(1)).sum(1).mean()
        with torch.no_grad():
            hit = targets > 0
            top1 = hit.gather(1, logits.argmax(1, keepdim=True)).float().mean()
            count = hit.sum(1)
            # Only the top max(R) ranks matter: topk, not a sort of the whole vocabulary per row.
            order = logits.topk(int(count.max()), dim=1).indices
            ranked_hits = hit.gather(1, order).float().cumsum(1)  # hits among the top k, for every k
            rprec = (ranked_hits.gather(1, (count - 1).unsqueeze(1)).squeeze(1) / count).mean()
        return loss, {"words_loss": loss.detach(), "words_top1": top1, "words_rprec": rprec}
