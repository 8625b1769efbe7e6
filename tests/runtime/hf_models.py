"""Tiny transformers architectures for the architecture tests, built from configurations
(random weights, no downloads), loaded through `factory("hf_models:...")`.

Every factory is seeded, so a test can rebuild the same weights."""

import torch

SEQ = 8


def example_input():
    return torch.zeros(1, SEQ, dtype=torch.long)


def make_gpt2(tied: bool = False, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=2, n_head=2,
                        tie_word_embeddings=tied, use_cache=False, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


def make_llama(tied: bool = True, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16,
                         tie_word_embeddings=tied, use_cache=False, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return LlamaForCausalLM(config).eval()


def make_bert_classifier(seed: int = 0, labels: int = 3):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, num_labels=labels)
    return BertForSequenceClassification(config).eval()


def make_texts(n: int = 96, seed: int = 0, labels: int = 3):
    """A generated text-classification set: token-id sentences (0 is [PAD], 1 [CLS])
    whose class is the first word's id modulo `labels`."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(2, 64, (n, SEQ), generator=gen)
    x[:, 0] = 1
    return x, (x[:, 1] % labels).long()


def make_resnet(layer_type: str = "basic", seed: int = 0, labels: int = 5):
    """ResNetForImageClassification, two stages (the second with a projection shortcut);
    input (1, 3, 32, 32)."""
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(seed)
    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                          layer_type=layer_type, num_labels=labels)
    return ResNetForImageClassification(config).eval()


def make_mobilenet_v2(seed: int = 0, labels: int = 5):
    """MobileNetV2ForImageClassification at a quarter width (depthwise convolutions,
    inverted residuals, TF-style padding); input (1, 3, 32, 32)."""
    from transformers import MobileNetV2Config, MobileNetV2ForImageClassification

    torch.manual_seed(seed)
    config = MobileNetV2Config(num_channels=3, image_size=32, depth_multiplier=0.25, min_depth=4,
                               finegrained_output=False, num_labels=labels, classifier_dropout_prob=0.0)
    model = MobileNetV2ForImageClassification(config).eval()
    # transformers' initialisation (std 0.02) makes the activations vanish over 17 blocks
    # (logits ~1e-26): He initialisation and BatchNorm statistics of a real network keep
    # the function far from zero, so a test that compares outputs compares something
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
            elif isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 2.0)
    return model


def make_vit(seed: int = 0, labels: int = 5):
    """ViTForImageClassification: patch embedding, two encoder layers; input (1, 3, 16, 16)."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    config = ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=32, num_labels=labels)
    return ViTForImageClassification(config).eval()


# ---------------------------------------------------------------- attention heads

def make_bert_heads(seed: int = 0, labels: int = 3, eager: bool = True):
    """BertForSequenceClassification with 4 heads of 4 dims; `eager` attention runs the
    score and value matmuls as matmuls that the MAC counter sees."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=32, max_position_embeddings=16, num_labels=labels)
    if eager:
        config._attn_implementation = "eager"
    return BertForSequenceClassification(config).eval()


def make_llama_gqa(seed: int = 0, eager: bool = True):
    """Llama with grouped-query attention: 4 query heads sharing 2 key/value heads."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16,
                         tie_word_embeddings=False, use_cache=False, bos_token_id=0, eos_token_id=0,
                         pad_token_id=0)
    if eager:
        config._attn_implementation = "eager"
    return LlamaForCausalLM(config).eval()


def make_vit_heads(seed: int = 0, labels: int = 3):
    """ViTForImageClassification on 3x8x8 images, 4x4 patches, 4 heads (sdpa attention)."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    config = ViTConfig(image_size=8, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=1,
                       num_attention_heads=4, intermediate_size=32, num_labels=labels)
    return ViTForImageClassification(config).eval()


# ---------------------------------------------------------------- question answering

def make_bert_qa(seed: int = 0):
    """BertForQuestionAnswering: start and end logits over the 8 positions."""
    from transformers import BertConfig, BertForQuestionAnswering

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16)
    return BertForQuestionAnswering(config).eval()


def make_spans(n: int = 128, seed: int = 0):
    """A generated extractive-QA set: token-id passages ([CLS] = 1 first) where the answer
    starts at the token 3 and ends at the token 4 (start < end); targets are the
    (start, end) positions, the span task."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(5, 64, (n, SEQ), generator=gen)
    x[:, 0] = 1
    start = torch.randint(1, SEQ - 1, (n,), generator=gen)
    end = start + 1 + (torch.rand(n, generator=gen) * (SEQ - 1 - start)).long()
    rows = torch.arange(n)
    x[rows, start] = 3
    x[rows, end] = 4
    return x, torch.stack([start, end], dim=1)
