"""A small GPT-2 from transformers (random weights: no download) with its embedding tied
to `lm_head`, and token sequences to compare outputs on, for tiny_lm.kmr."""

import torch

VOCAB, SEQ = 512, 32


def make_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB, n_positions=SEQ, n_embd=64, n_layer=2, n_head=4,
                        use_cache=False, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


def example_input():
    return torch.zeros(1, SEQ, dtype=torch.long)


def make_tokens(count: int = 64, seed: int = 1):
    """Token ids (no targets): fidelity compares next-token distributions by cosine."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (count, SEQ), generator=gen)
