"""Small models with the layer names the corpus recipes target, for `kmr import --model`.

- `llama()`: a 2-layer Llama (transformers) -> model.layers.N.self_attn.{q,k,v,o}_proj,
  model.layers.N.mlp.{gate,up,down}_proj, lm_head: what llm-compressor's recipes name.
- `bert_qa()`: a 12-layer BERT for question answering -> bert.encoder.layer.N.* (the
  SparseML BERT recipes).
- `recipe_resnet.resnet()` (its own module, for its image-shaped example input):
  torchvision's ResNet naming on a few channels.
"""

from __future__ import annotations

import torch


def llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval()


def bert_qa():
    from transformers import BertConfig, BertForQuestionAnswering

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=128, hidden_size=16, num_hidden_layers=12, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=128)
    return BertForQuestionAnswering(cfg).eval()


def calibration():
    """Token ids for calibration (llm-compressor recipes), seeded."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 128, (16, 12), generator=gen)
    return x, torch.zeros(16, dtype=torch.long)
