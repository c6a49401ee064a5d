"""Heads: the MLM decoder is tied to the word embeddings; heads start from BERT's initialisation."""

import torch

from model_helpers import make_batch, tiny_model_config
from pixelbert import build_model
from pixelbert.config import HEAD_NAMES


def test_mlm_decoder_shares_the_word_embedding_storage():
    model = build_model(tiny_model_config())
    decoder, words = model.heads["mlm"].decoder.weight, model.bert.embeddings.word_embeddings.weight
    assert decoder is words and decoder.data_ptr() == words.data_ptr()
    assert sum(p is words for p in model.parameters()) == 1  # counted (and optimised) once


def test_a_gradient_step_keeps_the_mlm_decoder_tied():
    torch.manual_seed(0)
    model = build_model(tiny_model_config(heads=["mlm"], feature_stage=1, extra_pool=False)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    batch = make_batch([(16, 16)])
    before = model.bert.embeddings.word_embeddings.weight.detach().clone()
    logits = model.mlm_logits(model(batch))
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch.input_ids.flatten()).backward()
    optimizer.step()
    words = model.bert.embeddings.word_embeddings.weight
    assert not torch.equal(words, before)
    assert model.heads["mlm"].decoder.weight is words
    head, x = model.heads["mlm"], torch.randn(1, 64)
    torch.testing.assert_close(head(x), head.norm(head.act(head.dense(x))) @ words.T + head.bias)


def test_heads_start_from_berts_initialisation():
    model = build_model(tiny_model_config())
    vqa_out = model.heads["vqa"].mlp[-1]
    assert vqa_out.bias.abs().sum() == 0
    assert abs(vqa_out.weight.std().item() - 0.02) < 0.005
    assert model.heads["mlm"].bias.abs().sum() == 0
    assert torch.equal(model.heads["nlvr2"].mlp[2].weight, torch.ones(128))


def test_every_head_the_config_accepts_is_built():
    model = build_model(tiny_model_config(heads=list(HEAD_NAMES)))
    assert list(model.heads) == list(HEAD_NAMES)
