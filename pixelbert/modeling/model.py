"""PixelBert: CNN trunk -> pixel tokens, joined with text tokens in ONE BERT encoder.

Sequence per text row: ``[CLS] w1..wn [SEP] (text padding) v1..vk (pixel padding)``, with a
joint attention mask, so padded text and padded pixels are never attended to. The CNN runs
once per image; text rows pick their image's tokens through ``image_index``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_model
from torch import nn
from transformers.masking_utils import create_bidirectional_mask

from pixelbert.batch import Batch
from pixelbert.config import (ANSWERS_NAME, CONFIG_NAME, WEIGHTS_NAME, Config, ConfigError, ModelConfig,
                              config_from_dict, read_json_object)
from pixelbert.modeling.backbone import build_backbone, read_weights
from pixelbert.modeling.heads import build_heads, init_bert_weights
from pixelbert.modeling.text import bert_config_dict, build_text_model
from pixelbert.modeling.tokenizer import load_tokenizer
from pixelbert.modeling.visual import PixelEmbedding, PixelTokens, trunk_sizes

__all__ = ["PixelBert", "PixelBertOutput", "build_model", "pretrained_dir", "WEIGHTS_NAME", "CONFIG_NAME"]


@dataclass
class PixelBertOutput:
    """Joint encoder output for B text rows (L text positions, N pixel positions).

    hidden (B, L+N, D); attention_mask (B, L+N) bool, True where attended; text_length L;
    pixel_index (B, N) flat cell index into the (h, w) feature grid, None when every cell is
    a token (then token L+j is cell j, row-major); pixel_grid (I, h, w) bool valid cells per
    image; image_index (B,) the image of every row; attentions: one (B, heads, L+N, L+N)
    tensor per layer when asked for, else None.
    """

    hidden: torch.Tensor
    attention_mask: torch.Tensor
    text_length: int
    pixel_index: torch.Tensor | None
    pixel_grid: torch.Tensor
    image_index: torch.Tensor
    attentions: tuple[torch.Tensor, ...] | None = None

    @property
    def cls(self) -> torch.Tensor:
        """(B, D) the [CLS] state."""
        return self.hidden[:, 0]

    @property
    def text_hidden(self) -> torch.Tensor:
        """(B, L, D)."""
        return self.hidden[:, : self.text_length]

    @property
    def pixel_hidden(self) -> torch.Tensor:
        """(B, N, D)."""
        return self.hidden[:, self.text_length :]


class PixelBert(nn.Module):
    """The Pixel-BERT model, built only from a ModelConfig.

    Submodules: ``backbone`` (CNN trunk; its parameters are the ``backbone.*`` ones, trained
    with SGD in the paper), ``visual`` (pixel tokens), ``bert`` (HF BertModel: embeddings +
    encoder), ``heads`` (ModuleDict of the configured heads).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = copy.deepcopy(config)
        self.backbone, channels = build_backbone(config)
        self.bert = build_text_model(config)
        bert_cfg = self.bert.config
        self.visual = PixelEmbedding(channels, bert_cfg.hidden_size, config, bert_cfg.layer_norm_eps)
        init_bert_weights(self.visual, bert_cfg.initializer_range)
        nn.init.normal_(self.visual.semantic, std=bert_cfg.initializer_range)
        self.heads = build_heads(
            list(config.heads), bert_cfg, self.bert.embeddings.word_embeddings, config.num_answers, channels
        )
        # Which heads hold freshly initialised weights, and which saved heads were left out
        # (``from_pretrained`` fills it in): read by whoever logs where the weights came from.
        self.init_report = {"fresh": list(config.heads), "dropped": []}
        # The VQA answer of each logit (answers.json of an export); what predict_vqa names answers by.
        self.answers: list[str] | None = None

    @property
    def hidden_size(self) -> int:
        return self.bert.config.hidden_size

    @property
    def pixel_stride(self) -> int:
        """Input pixels per token side: token (r, c) sits over image rows [r*s, (r+1)*s), columns alike."""
        return self.backbone.stride * (2 if self.visual.pool is not None else 1)

    # ----------------------------------------------------------------- encoding
    def encode_images(
        self,
        images: torch.Tensor,
        pixel_mask: torch.Tensor | None = None,
        sample_pixels: bool = False,
        generator: torch.Generator | None = None,
    ) -> PixelTokens:
        """images (I, 3, H, W), pixel_mask (I, H, W) bool (None: no padding) -> PixelTokens (I, N, D).

        Random pixel sampling (model.pixel_samples per image) only when sample_pixels is set,
        the model is in training mode and model.pixel_sampling is on; evaluation and
        fine-tuning see every pixel.
        """
        features, sizes = self._trunk(images, pixel_mask)
        sample = sample_pixels and self.training and self.config.pixel_sampling
        k = self.config.pixel_samples if sample else None
        return self.visual(features, sizes, k, generator)

    def _trunk(self, images: torch.Tensor, pixel_mask: torch.Tensor | None):
        """CNN features and their valid sizes (None when nothing is padded; see ``trunk_sizes``)."""
        return self.backbone(images, trunk_sizes(pixel_mask))

    def forward_tokens(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixels: PixelTokens,
        image_index: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> PixelBertOutput:
        """Fuse text rows with precomputed pixel tokens (e.g. cached once per image for retrieval).

        input_ids, attention_mask (B, L); pixels for I images; image_index (B,) the image of
        each row (None: row i <-> image i).
        """
        rows = image_index if image_index is not None else torch.arange(input_ids.shape[0], device=input_ids.device)
        text = self.bert.embeddings(input_ids=input_ids)  # word + position + token type 0, LayerNorm
        hidden = torch.cat([text, pixels.tokens[rows].to(text.dtype)], dim=1)
        mask = torch.cat([attention_mask.bool(), pixels.mask[rows]], dim=1)
        hidden, attentions = self._encode(hidden, mask, output_attentions)
        return PixelBertOutput(
            hidden=hidden,
            attention_mask=mask,
            text_length=input_ids.shape[1],
            pixel_index=None if pixels.index is None else pixels.index[rows],
            pixel_grid=pixels.grid,
            image_index=rows,
            attentions=attentions,
        )

    def forward(
        self,
        batch: Batch,
        sample_pixels: bool = False,
        generator: torch.Generator | None = None,
        output_attentions: bool = False,
        pixels: PixelTokens | None = None,
    ) -> PixelBertOutput:
        """Batch -> joint hidden states. ``pixels``: reuse tokens from ``encode_images`` instead of the images."""
        if pixels is None:
            pixels = self.encode_images(batch.images, batch.pixel_mask, sample_pixels, generator)
        return self.forward_tokens(
            batch.input_ids, batch.attention_mask, pixels, batch.row_images(), output_attentions
        )

    def _encode(self, hidden: torch.Tensor, mask: torch.Tensor, output_attentions: bool):
        """hidden (B, S, D), mask (B, S) bool -> ((B, S, D), per-layer attentions or None)."""
        if not output_attentions:
            # Always a mask: dropping an all-True one would first read it on the host (a GPU sync
            # every forward), and a batch of text and sampled pixels is practically never all-True.
            ext = create_bidirectional_mask(config=self.bert.config, inputs_embeds=hidden, attention_mask=mask,
                                            allow_is_bidirectional_skip=False)
            return self.bert.encoder(hidden, attention_mask=ext).last_hidden_state, None
        captured: list[torch.Tensor] = []
        hooks = [
            layer.attention.self.register_forward_hook(lambda _m, _i, out: captured.append(out[1]))
            for layer in self.bert.encoder.layer
        ]
        try:
            with self._eager_attention():  # fused kernels (sdpa) never materialise the weights
                ext = create_bidirectional_mask(config=self.bert.config, inputs_embeds=hidden, attention_mask=mask)
                out = self.bert.encoder(hidden, attention_mask=ext).last_hidden_state
        finally:
            for hook in hooks:
                hook.remove()
        return out, tuple(captured)

    @contextmanager
    def _eager_attention(self):
        config = self.bert.config
        previous = config._attn_implementation
        config._attn_implementation = "eager"
        try:
            yield
        finally:
            config._attn_implementation = previous

    # -------------------------------------------------------------------- heads
    def _head(self, name: str) -> nn.Module:
        if name not in self.heads:
            raise KeyError(f"the model has no '{name}' head (model.heads = {list(self.heads)})")
        return self.heads[name]

    def mlm_logits(self, out: PixelBertOutput,
                   positions: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """(B, L, V) vocabulary logits; with positions ((B, L) bool, or their (rows, cols) from
        ``nonzero(as_tuple=True)``), only those: (M, V)."""
        text = out.text_hidden
        return self._head("mlm")(text if positions is None else text[positions])

    def pooled(self, out: PixelBertOutput) -> torch.Tensor:
        """(B, D) what the ITM / VQA / NLVR2 heads read: the [CLS] state (``model.pooling="cls"``,
        the paper's), or the mean over every attended text and pixel token (``"mean"``)."""
        if self.config.pooling == "cls":
            return out.cls
        weights = out.attention_mask.unsqueeze(-1).to(out.hidden.dtype)
        return (out.hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)

    def image_words_logits(self, images: torch.Tensor, pixel_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(I, V) from the CNN alone: its feature map averaged over each image's valid cells."""
        features, sizes = self._trunk(images, pixel_mask)  # zero outside sizes
        if sizes is None:
            pooled = features.mean((2, 3))
        else:
            pooled = features.sum((2, 3)) / sizes.prod(1, keepdim=True).clamp_min(1).to(features.dtype)
        return self._head("words")(pooled)

    def itm_logits(self, out: PixelBertOutput) -> torch.Tensor:
        """(B, 2) image-text match logits (class 1 = match)."""
        return self._head("itm")(self.pooled(out))

    def retrieval_scores(self, out: PixelBertOutput) -> torch.Tensor:
        """(B,) ranking score: the ITM match log-odds (logit 1 - logit 0), monotone in P(match)."""
        logits = self.itm_logits(out)
        return logits[:, 1] - logits[:, 0]

    def vqa_logits(self, out: PixelBertOutput) -> torch.Tensor:
        """(B, A) answer logits."""
        return self._head("vqa")(self.pooled(out))

    def nlvr2_logits(self, out: PixelBertOutput) -> torch.Tensor:
        """(B/2, 2) from the [CLS] of rows 2i (image 0) and 2i+1 (image 1)."""
        return self._head("nlvr2")(self.pooled(out))

    # ------------------------------------------------------------------ predict
    @torch.no_grad()
    def _predict(self, batch: Batch, logits) -> torch.Tensor:
        """(B, C) float32 probabilities of ``logits(out)``, every pixel seen, in eval mode (as evaluation runs)."""
        param = next(self.parameters())
        was_training = self.training
        self.eval()
        try:
            out = self(batch.to(param.device, param.dtype), sample_pixels=False)
            return logits(out).float().softmax(dim=-1).cpu()
        finally:
            self.train(was_training)

    def predict_vqa(self, batch: Batch) -> list[tuple[str, float]]:
        """(answer, probability) for every question row of ``batch`` (e.g. from ``pixelbert.Processor``).

        The answer is the arg-max of the VQA logits, the one evaluation picks; the probability is
        its softmax over the answer list.
        """
        if self.answers is None:
            raise ConfigError(f"the model has no answer list ({ANSWERS_NAME}): load a VQA export (a fine-tuned "
                              "run folder or its export/), or set model.answers")
        probs = self._predict(batch, self.vqa_logits)
        best, index = probs.max(dim=1)
        return [(self.answers[i], p) for i, p in zip(index.tolist(), best.tolist())]

    def predict_itm(self, batch: Batch) -> list[float]:
        """P(the text matches its image) for every row of ``batch``; ranking captions (or images) by it
        ranks them as retrieval evaluation does (its score is the same match log-odds)."""
        return self._predict(batch, self.itm_logits)[:, 1].tolist()

    def parameter_groups(self) -> dict[str, dict[str, nn.Parameter]]:
        """Trainable parameters by optimiser: {"cnn": backbone.*, "transformer": everything else}."""
        groups: dict[str, dict[str, nn.Parameter]] = {"cnn": {}, "transformer": {}}
        for name, p in self.named_parameters():
            if p.requires_grad:
                groups["cnn" if name.startswith("backbone.") else "transformer"][name] = p
        return groups

    # ------------------------------------------------------------ save / load
    def export_config(self) -> ModelConfig:
        """The config that rebuilds this model with no outside file: full BertConfig, no paths."""
        return dataclasses.replace(
            self.config,
            backbone_weights=None,
            text_model=None,
            tokenizer=None,
            text_config=bert_config_dict(self.bert.config),
        )

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write model.safetensors, pixelbert_config.json, the tokenizer files and (a VQA model with
        ``answers``) answers.json into directory, readable by whoever the umask lets read new files."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # save_model stores the tied MLM decoder once (as bert.embeddings.word_embeddings.weight,
        # the name that sorts first), so a model without an MLM head still finds it.
        save_model(self, str(directory / WEIGHTS_NAME), force_contiguous=True)
        payload = {"model": dataclasses.asdict(self.export_config())}
        (directory / CONFIG_NAME).write_text(json.dumps(payload, indent=2) + "\n")
        # safetensors writes the weights owner-only (0600): give them the config file's permissions,
        # those of any new file (0666 less the umask), so that others can load the export too.
        (directory / WEIGHTS_NAME).chmod((directory / CONFIG_NAME).stat().st_mode & 0o777)
        if self.config.tokenizer or self.config.text_model:
            load_tokenizer(self.config).save_pretrained(str(directory))
        if self.answers is not None and "vqa" in self.config.heads:
            (directory / ANSWERS_NAME).write_text(json.dumps(list(self.answers)) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, **overrides) -> "PixelBert":
        """Rebuild a saved model. ``overrides`` replace ModelConfig fields, e.g.
        ``heads=["vqa"]`` to fine-tune from a pre-trained model: weights of dropped heads are
        ignored and new heads start from BERT's initialisation; any other key mismatch raises.
        A missing, broken or mismatched file is one ConfigError line naming it. ``directory``
        may also be a run folder (``train.output_dir``): its ``export/`` is loaded.
        """
        directory = pretrained_dir(directory)
        path = directory / CONFIG_NAME
        raw = read_json_object(path, "model config").get("model")
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: no 'model' section (not a save_pretrained folder)")
        saved_heads, saved_answers = list(raw.get("heads", [])), raw.get("num_answers")
        raw.update(overrides)
        if (directory / "tokenizer_config.json").is_file():
            raw["tokenizer"] = str(directory)
        cfg = config_from_dict({"model": raw}, source=str(path)).model
        model = cls(cfg)
        # Heads that are new (or a VQA head with a new answer count) keep their fresh init;
        # heads no longer configured are skipped. Everything else must match exactly.
        fresh = [h for h in cfg.heads
                 if h not in saved_heads or (h == "vqa" and cfg.num_answers != saved_answers)]
        dropped = [h for h in saved_heads if h not in cfg.heads]
        skip = tuple(f"heads.{h}." for h in fresh + dropped)
        weights = directory / WEIGHTS_NAME
        if not weights.is_file():
            raise ConfigError(f"{weights}: not found (a save_pretrained folder holds {CONFIG_NAME} and {WEIGHTS_NAME})")
        state = {k: v for k, v in read_weights(weights).items() if not (skip and k.startswith(skip))}
        try:
            result = model.load_state_dict(state, strict=False)
        except RuntimeError as e:  # shape mismatch: name the file, keep the detail line
            detail = str(e).strip().splitlines()[-1].strip()
            raise ConfigError(f"{weights}: does not fit the config: {detail}") from None
        tied = {"heads.mlm.decoder.weight"}  # stored once, as the word embeddings
        missing = [k for k in result.missing_keys if k not in tied and not (skip and k.startswith(skip))]
        if missing or result.unexpected_keys:
            unexpected = sorted(result.unexpected_keys)[:5]
            raise ConfigError(f"{weights}: missing {sorted(missing)[:5]}, unexpected {unexpected}")
        model.init_report = {"fresh": fresh, "dropped": dropped}
        if "vqa" in cfg.heads and "vqa" not in fresh:
            model.answers = _read_answers(directory / ANSWERS_NAME, cfg.num_answers)
        return model


def pretrained_dir(path: str | Path) -> Path:
    """The save_pretrained folder ``path`` names: itself, or the ``export/`` of a run folder.
    Anything else is one ConfigError line saying what to pass instead."""
    path = Path(path)
    for candidate in (path, path / "export"):
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    if not path.is_dir():
        raise ConfigError(f"{path}: no such folder (pass a save_pretrained folder or a run folder holding export/)")
    if (path / "checkpoints").is_dir():
        raise ConfigError(f"{path}: a run folder without export/ (the run did not finish); export its latest "
                          f"checkpoint with: python launcher/export.py {path} {path / 'export'}")
    raise ConfigError(f"{path / CONFIG_NAME}: not found (pass a save_pretrained folder, holding {CONFIG_NAME} and "
                      f"{WEIGHTS_NAME}, or a run folder holding export/)")


def _read_answers(path: Path, count: int) -> list[str] | None:
    """A VQA export's answer list (None when the export has none); a wrong one is one ConfigError line."""
    if not path.is_file():
        return None
    try:
        answers = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not (isinstance(answers, list) and len(answers) == count and all(isinstance(a, str) for a in answers)):
        raise ConfigError(f"{path}: must be a list of the {count} answers (model.num_answers) as strings")
    return answers


def build_model(config: Config | ModelConfig) -> PixelBert:
    """The one front door: a PixelBert from a full Config or its model section."""
    return PixelBert(config.model if isinstance(config, Config) else config)
