"""A folder of texts the suite writes itself, as `training.data` reads one (`--dataset PATH`): train.txt,
validation.txt and test.txt, one text per line, sentences of a small grammar with punctuation, capitals and
a few rare words, so that a counted vocabulary has frequent and rare words and texts differ in length."""

from __future__ import annotations

import os
import pathlib

import numpy as np

SUBJECTS = ["The cat", "A dog", "My friend", "The old man", "Every child", "Nobody"]
VERBS = ["likes", "sees", "finds", "remembers", "forgets", "wants"]
OBJECTS = ["the red ball", "a quiet house", "the long road", "some cold water", "the last train"]
ENDINGS = [".", "!", "?", ", again.", " (really)."]
TEXTS = {"train.txt": 400, "validation.txt": 60, "test.txt": 60}
SEED = 20170302


def sentence(rng: np.random.Generator) -> str:
    words = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
    if rng.random() < 0.3:
        words += f" and {rng.choice(OBJECTS)}"
    if rng.random() < 0.05:
        words += f" near zyx{rng.integers(1000)}"  # rare words, most seen once
    return words + rng.choice(ENDINGS)


def write(folder) -> pathlib.Path:
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    for name, count in TEXTS.items():
        lines = [" ".join(sentence(rng) for _ in range(rng.integers(1, 3))) for _ in range(count)]
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


def folder() -> pathlib.Path:
    """The session's folder of texts, beside its generated TFDS data (tests/conftest.py writes both)."""
    return pathlib.Path(os.environ["TFDS_DATA_DIR"]) / "texts"
