"""Samples -> Batch: padding and pixel masks, tokenisation, MLM masking, ITM negatives, task targets.

Shared by both backends; all randomness comes from the ``rng`` the loader derives from
(seed, epoch, rank, position of the batch), so a batch is the same whichever backend, worker
or resumed run makes it.

Row layouts (``image_index`` maps rows to images; below it counts the images of the samples in
order, and units of the same image, e.g. several questions of one picture, then share one
image in the batch, so the CNN runs once for all of them):
* pretrain: one row per image with one of its captions (drawn per epoch). With probability
  ``itm_negative_probability`` the caption is replaced by a caption of a *different* image
  of the batch whose text is not one of this image's own captions (itm_label 0). If the
  batch holds no such caption the row stays a positive. ``itm_paired_negatives``: instead,
  every image gets two rows, its caption then a wrong one, sharing one CNN pass. MLM masks every row the same way,
  so a [MASK] does not give away a positive; labels are kept on positives only (a negative's
  masked word cannot be recovered from its image).
* retrieval, training: ``1 + retrieval_negatives`` rows per image (``group_size``): one of
  its captions, then wrong captions drawn (independently, so repeats are possible in small
  batches) from the other images of the batch; an image for which the batch holds no wrong
  caption is left out of the batch. Evaluation: one row per caption of each image.
* vqa: one row per question; ``vqa_targets`` (B, A) soft scores.
* nlvr2: rows 2i, 2i+1 = (sentence, left image), (sentence, right image); labels (B/2,).
* hflip (off by default, training only): a flipped unit's images are mirrored, its text has
  "left" and "right" swapped, and an NLVR2 pair also swaps its two images.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from pixelbert.batch import IGNORE_INDEX, Batch
from pixelbert.config import DataConfig

from data_pipeline.records import Sample

__all__ = ["Collator", "pad_images", "padded_size", "tokenize", "mask_tokens"]

_LEFT_RIGHT = re.compile(r"\b(left|right)\b", re.IGNORECASE)


def _swap_left_right(text: str) -> str:
    def swap(m):
        word = "right" if m.group(0).lower() == "left" else "left"
        return word.capitalize() if m.group(0)[0].isupper() else word

    return _LEFT_RIGHT.sub(swap, text)


def padded_size(sizes, multiple: int = 1) -> tuple[int, int]:
    """(H, W) of a batch of images of (h_i, w_i): the largest of each, rounded up to ``multiple``."""
    return tuple(-(-max(s[k] for s in sizes) // multiple) * multiple for k in (0, 1))


def pad_images(images: list[torch.Tensor], multiple: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, h_i, w_i) tensors -> images (I, 3, H, W) zero-padded bottom/right, pixel_mask (I, H, W);
    H and W are multiples of ``multiple``. The mask is True on each image's own pixels only, so
    the extra rows and columns are padding like any other (the model's trunk masks them)."""
    H, W = padded_size([x.shape[1:] for x in images], multiple)
    out = images[0].new_zeros(len(images), 3, H, W)
    mask = torch.zeros(len(images), H, W, dtype=torch.bool, device=images[0].device)
    for i, x in enumerate(images):
        out[i, :, : x.shape[1], : x.shape[2]] = x
        mask[i, : x.shape[1], : x.shape[2]] = True
    return out, mask


def tokenize(tokenizer, texts: list[str], max_len: int):
    """Texts -> input_ids, attention_mask (B, L) and special_tokens_mask, padded to the longest, cut at max_len."""
    return tokenizer(texts, padding="longest", truncation=True, max_length=max_len,
                     return_special_tokens_mask=True, return_tensors="pt")


def mask_tokens(
    input_ids: torch.Tensor, special: torch.Tensor, probability: float, mask_id: int,
    replacement_ids: np.ndarray, rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: each non-special token (padding counts as special) is chosen with
    ``probability``; chosen -> [MASK] 80%, a random ordinary token 10%, unchanged 10%.
    Returns (masked ids, labels (B, L) with IGNORE_INDEX where not chosen)."""
    shape = tuple(input_ids.shape)
    chosen = (torch.from_numpy(rng.random(shape)) < probability) & ~special
    action = torch.from_numpy(rng.random(shape))
    random_ids = torch.from_numpy(replacement_ids[rng.integers(0, len(replacement_ids), shape)])
    ids = input_ids.clone()
    ids[chosen & (action < 0.8)] = mask_id
    swap = chosen & (action >= 0.8) & (action < 0.9)
    ids[swap] = random_ids[swap]
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    return ids, labels


class Collator:
    """Build a Batch from Samples for ``task``; ``answers``: the VQA answer vocabulary."""

    def __init__(self, tokenizer, task: str, data: DataConfig, *, train: bool, answers: list[str] | None = None):
        self.tokenizer, self.task, self.data, self.train = tokenizer, task, data, train
        self.answer_index = {a: i for i, a in enumerate(answers or [])}
        special = set(tokenizer.all_special_ids)
        self.replacement_ids = np.array([i for i in range(len(tokenizer)) if i not in special], dtype=np.int64)

    def __call__(self, samples: list[Sample], rng: np.random.Generator) -> Batch | None:
        if not samples:
            return None
        flips = [bool(self.train and self.data.hflip and rng.random() < 0.5) for _ in samples]
        images, texts_of, slot_of, unique = [], [], [], {}
        for s, flip in zip(samples, flips):
            ims = [x.flip(-1) for x in s.images][::-1] if flip else list(s.images)
            # Only an NLVR2 pair changes order; one image reversed is itself.
            ids = s.image_ids[::-1] if flip else s.image_ids
            if len(ids) != len(ims):  # ids that do not name the images: share nothing
                ids = [object() for _ in ims]
            for image_id, im in zip(ids, ims):
                # Units of one image in the batch (its questions) share one copy: one CNN pass.
                if (image_id, flip) not in unique:
                    unique[image_id, flip] = len(images)
                    images.append(im)
                slot_of.append(unique[image_id, flip])
            texts_of.append([_swap_left_right(t) for t in s.texts] if flip else list(s.texts))
        rows = getattr(self, f"_rows_{self.task}")(samples, texts_of, rng)
        texts, image_index = rows.pop("texts"), [slot_of[j] for j in rows.pop("image_index")]
        if not texts:
            return None
        enc = tokenize(self.tokenizer, texts, self.data.max_text_len)
        input_ids, attention = enc["input_ids"], enc["attention_mask"]
        mlm_labels = None
        if self.task == "pretrain":
            special = enc["special_tokens_mask"].bool() | (attention == 0)
            input_ids, mlm_labels = mask_tokens(input_ids, special, self.data.mlm_probability,
                                                self.tokenizer.mask_token_id, self.replacement_ids, rng)
            mlm_labels[rows["itm_labels"] == 0] = IGNORE_INDEX
        pixels, pixel_mask = pad_images(images, self.data.pad_multiple)
        meta = {"keys": [s.key for s in samples], "image_ids": [i if isinstance(i, str) else None for i, _ in unique],  # of batch.images
                "texts": texts, "flipped": flips, **rows.pop("meta", {})}
        return Batch(images=pixels, pixel_mask=pixel_mask, input_ids=input_ids, attention_mask=attention,
                     image_index=torch.tensor(image_index, dtype=torch.long), mlm_labels=mlm_labels,
                     meta=meta, **rows)

    # ----------------------------------------------------------------------------------------
    # One method per task: rows of text, the image of every row, task tensors.

    @staticmethod
    def _wrong_caption(i, samples, texts_of, rng, tries: int = 8) -> str | None:
        """A caption of another image of the batch that is not one of image i's own captions.

        A few random draws first (cheap, and the answer almost always); then, so that a
        negative is never missed when one exists, a scan of the whole batch."""
        own, ids = set(texts_of[i]), set(samples[i].image_ids)

        def usable(j):
            return [c for c in texts_of[j] if c not in own] if j != i and not ids & set(samples[j].image_ids) else []

        for _ in range(tries):
            pool = usable(int(rng.integers(len(samples))))
            if pool:
                return pool[int(rng.integers(len(pool)))]
        pool = [c for j in range(len(samples)) for c in usable(j)]
        return pool[int(rng.integers(len(pool)))] if pool else None

    def _rows_pretrain(self, samples, texts_of, rng):
        if self.data.itm_paired_negatives:
            return self._rows_pretrain_paired(samples, texts_of, rng)
        captions = [t[int(rng.integers(len(t)))] if self.train else t[0] for t in texts_of]
        itm = []
        for i in range(len(samples)):
            wrong = None
            if rng.random() < self.data.itm_negative_probability:
                wrong = self._wrong_caption(i, samples, texts_of, rng)
            if wrong is not None:
                captions[i] = wrong
            itm.append(int(wrong is None))
        return {"texts": captions, "image_index": list(range(len(samples))),
                "itm_labels": torch.tensor(itm, dtype=torch.long)}

    def _rows_pretrain_paired(self, samples, texts_of, rng):
        """Every image twice: with one of its captions (itm 1), then with a wrong one (itm 0)."""
        texts, image_index, itm = [], [], []
        for i, own in enumerate(texts_of):
            texts.append(own[int(rng.integers(len(own)))] if self.train else own[0])
            image_index.append(i)
            itm.append(1)
            wrong = self._wrong_caption(i, samples, texts_of, rng)
            if wrong is not None:
                texts.append(wrong)
                image_index.append(i)
                itm.append(0)
        return {"texts": texts, "image_index": image_index, "itm_labels": torch.tensor(itm, dtype=torch.long)}

    def _rows_retrieval(self, samples, texts_of, rng):
        texts, image_index, itm = [], [], []
        if not self.train:  # every caption of every image, for the recall@K matrix
            ids = []
            for i, (s, own) in enumerate(zip(samples, texts_of)):
                texts += own
                image_index += [i] * len(own)
                ids += s.caption_ids or [None] * len(own)
            return {"texts": texts, "image_index": image_index, "itm_labels": torch.ones(len(texts), dtype=torch.long),
                    "meta": {"caption_ids": ids}}
        k = self.data.retrieval_negatives
        for i, own in enumerate(texts_of):
            wrong = [self._wrong_caption(i, samples, texts_of, rng) for _ in range(k)]
            if None in wrong:  # nothing in the batch can serve as a wrong caption for this image
                continue
            texts += [own[int(rng.integers(len(own)))]] + wrong
            image_index += [i] * (k + 1)
            itm += [1] + [0] * k
        return {"texts": texts, "image_index": image_index, "itm_labels": torch.tensor(itm, dtype=torch.long),
                "group_size": k + 1}

    def _rows_vqa(self, samples, texts_of, rng):
        targets = torch.zeros(len(samples), len(self.answer_index))
        for i, s in enumerate(samples):
            for answer, score in (s.targets or {}).items():
                if answer in self.answer_index:
                    targets[i, self.answer_index[answer]] = float(score)
        return {"texts": [t[0] for t in texts_of], "image_index": list(range(len(samples))), "vqa_targets": targets,
                "meta": {"question_ids": [s.question_id for s in samples], "answers": [s.answers for s in samples]}}

    def _rows_nlvr2(self, samples, texts_of, rng):
        texts = [t[0] for t in texts_of for _ in range(2)]
        return {"texts": texts, "image_index": list(range(2 * len(samples))),
                "labels": torch.tensor([s.label for s in samples], dtype=torch.long),
                "meta": {"identifiers": [s.question_id for s in samples]}}
