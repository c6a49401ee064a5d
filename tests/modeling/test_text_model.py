"""The text side: MiniLM from the installed package equals transformers' BertModel."""

import torch
from transformers import BertModel

from model_helpers import MINILM, tiny_model_config
from pixelbert import build_model, load_tokenizer
from pixelbert.config import resolve_package_path
from pixelbert.modeling.text import build_text_model
from pixelbert.modeling.visual import PixelTokens


def test_text_with_no_pixel_tokens_equals_transformers_bert_model():
    cfg = tiny_model_config(text_model=MINILM, text_config={}, heads=["itm"])
    model = build_model(cfg).eval()
    assert model.bert.config.num_hidden_layers == 6 and model.hidden_size == 384
    reference = BertModel.from_pretrained(resolve_package_path(MINILM), local_files_only=True).eval()
    tok = load_tokenizer(cfg)(["a red circle on the left", "blue"], padding=True, return_tensors="pt")
    with torch.no_grad():
        rows = tok["input_ids"].shape[0]
        none = PixelTokens(torch.zeros(rows, 0, model.hidden_size), torch.zeros(rows, 0, dtype=torch.bool), None,
                           torch.zeros(rows, 0, 0, dtype=torch.bool))
        ours = model.forward_tokens(tok["input_ids"], tok["attention_mask"], none).hidden
        theirs = reference(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).last_hidden_state
    real = tok["attention_mask"].bool()
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-5, rtol=1e-4)


def test_text_config_overrides_the_loaded_config():
    bert = build_text_model(tiny_model_config(text_model=MINILM, text_config={"num_hidden_layers": 2}))
    assert bert.config.num_hidden_layers == 2 and len(bert.encoder.layer) == 2
    assert bert.pooler is None


def test_a_random_bert_is_built_from_text_config_with_the_chosen_attention():
    bert = build_text_model(tiny_model_config(attn_implementation="eager"))
    assert bert.config.hidden_size == 64 and bert.config._attn_implementation == "eager"
