"""The CNN stage end to end: launcher/pretrain.py runs task visual_words on caption shards, exports,
and the export's trunk loads as ``model.backbone_weights`` of the Pixel-BERT pre-training model."""

from __future__ import annotations

import contextlib
import io

import torch

from tiny_data import model_section, write_config


def test_cnn_stage_trains_exports_and_its_trunk_loads_for_pretraining(tmp_path, task_data):
    from launcher import pretrain
    from pixelbert import PixelBert, build_model
    from pixelbert.config import config_from_dict

    _, shards, manifest = task_data("retrieval")  # COCO Karpathy captions: they serve pre-training too
    cfg = write_config(tmp_path / "config.json", "visual_words", shards, manifest, tmp_path / "run",
                       max_steps=4, eval_every=4)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = pretrain.main(["--config", str(cfg)])
    printed = out.getvalue()
    assert rc == 0, printed
    assert "done: step 4; train (last log window) words_top1" in printed and "; val words_top1" in printed
    export = tmp_path / "run" / "export"
    cnn = PixelBert.from_pretrained(export)
    assert cnn.config.heads == ["words"]

    pre_cfg = config_from_dict({"model": {**model_section(["mlm", "itm"]), "frozen_bn": True,
                                          "backbone_weights": str(export / "model.safetensors")}})
    model = build_model(pre_cfg)
    for name, value in cnn.backbone.state_dict().items():
        if not name.endswith("num_batches_tracked"):
            assert torch.equal(model.backbone.state_dict()[name], value), name
