"""A tiny Llama (transformers' LlamaForCausalLM from a small config: grouped-query
attention, SwiGLU MLP, no download) and the generated text it learns, for
tiny_llama.kmr.

The "text" is a fixed random Markov chain over 64 tokens: each token is followed by
one of four successors, the first three times as often as each of the others
(probabilities 0.7, 0.1, 0.1, 0.1), so the best possible next-token accuracy is 0.7.
`train_baseline.py` trains the model on it (a few seconds); `make_text` gives the
programs' data: token sequences and, as targets, the token that follows each one.
"""

import torch

VOCAB, SEQ = 64, 24
SUCCESSORS = 4
SPLIT_SEEDS = {"train": 1, "val": 2, "test": 3}


def make_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
                         tie_word_embeddings=False, use_cache=False, bos_token_id=0, eos_token_id=0,
                         pad_token_id=0)
    return LlamaForCausalLM(config).eval()


def example_input():
    return torch.zeros(1, SEQ, dtype=torch.long)


def _chain():
    """The chain's successor table: (VOCAB, SUCCESSORS) token ids and their probabilities."""
    gen = torch.Generator().manual_seed(0)
    table = torch.stack([torch.randperm(VOCAB, generator=gen)[:SUCCESSORS] for _ in range(VOCAB)])
    return table, torch.tensor([0.7, 0.1, 0.1, 0.1])


def sequences(count: int, seed: int, length: int = SEQ + 1) -> torch.Tensor:
    """`count` sequences of `length` tokens walked along the chain from random starts."""
    table, probs = _chain()
    gen = torch.Generator().manual_seed(seed)
    out = torch.empty(count, length, dtype=torch.long)
    out[:, 0] = torch.randint(0, VOCAB, (count,), generator=gen)
    for t in range(1, length):
        pick = torch.multinomial(probs, count, replacement=True, generator=gen)
        out[:, t] = table[out[:, t - 1], pick]
    return out


def make_text(split: str = "val", count: int = 256):
    """(token ids (count, SEQ), the next token of each sequence): next-token prediction."""
    seqs = sequences(count, SPLIT_SEEDS[split])
    return seqs[:, :SEQ], seqs[:, SEQ]
