"""Captions made from class labels, with several phrasings per class, for the built-in data sets.

They let text conditioning be trained and measured offline: a prompt's class is known, so a
classifier can tell whether the images drawn for it obey it. Each data set has templates with
one ``{}`` and, per class, one or more names; a class's phrasings are every template with every
name ("a handwritten seven", "a handwritten 7", ...). During training each image takes one of its
class's phrasings at random, a fresh draw every step.

Adding a labelled data set is one entry in :data:`LABEL_CAPTIONS`; without ``names`` the data
set's own class names are used (Flowers-102's "pink primrose", ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class LabelCaptions:
    templates: tuple[str, ...]  # each with one "{}" for a class name
    names: tuple[tuple[str, ...], ...] | None = None  # per class; None: the data set's class names

    def phrasings(self, class_names: list[str] | None) -> list[list[str]]:
        """Per class, its captions (every template with every name)."""
        names = self.names if self.names is not None else tuple((n.replace("_", " "),) for n in class_names or ())
        if not names:
            raise ConfigError("label-derived captions need class names, and the data set has none")
        return [[with_article(t.format(n)) for n in per_class for t in self.templates] for per_class in names]


_VOWEL_SOUND = re.compile(r"\b([Aa]) (?=(?!one\b)[aeiouAEIOU]|8|11\b|18\b)")


def with_article(text: str) -> str:
    """"a" before a vowel sound made "an" ("an eight", "an 8", "an airplane"; "a one" stays)."""
    return _VOWEL_SOUND.sub(lambda m: m.group(1) + "n ", text)


_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGITS = LabelCaptions(
    templates=("a handwritten {}", "the digit {}", "a picture of the number {}", "a drawing of a {}", "an image of a {}"),
    names=tuple((word, str(d)) for d, word in enumerate(_DIGIT_WORDS)),
)

FASHION = LabelCaptions(
    templates=("a photo of a {}", "a grayscale picture of a {}", "a {}, product photo", "an image of a {}"),
    names=(("t-shirt", "top"), ("pair of trousers", "trouser"), ("pullover", "sweater"), ("dress",), ("coat",),
           ("sandal",), ("shirt",), ("sneaker", "trainer"), ("bag", "handbag"), ("ankle boot", "boot")),
)

CIFAR10 = LabelCaptions(
    templates=("a photo of a {}", "a small photo of a {}", "a blurry picture of a {}", "an image of a {}"),
    names=(("airplane", "plane"), ("automobile", "car"), ("bird",), ("cat",), ("deer",), ("dog",), ("frog",),
           ("horse",), ("ship", "boat"), ("truck", "lorry")),
)

FLOWERS = LabelCaptions(templates=("a photo of a {}, a type of flower", "a {} in bloom", "a close-up photo of a {} flower"))

LABEL_CAPTIONS: dict[str, LabelCaptions] = {
    "digits": DIGITS,
    "mnist": DIGITS,
    "fashion-mnist": FASHION,
    "cifar10": CIFAR10,
    "flowers102": FLOWERS,
}


def label_phrasings(dataset: str, class_names: list[str] | None, num_classes: int) -> list[list[str]]:
    """The captions of each class of built-in data set ``dataset``; a ConfigError for another."""
    table = LABEL_CAPTIONS.get(dataset)
    if table is None:
        raise ConfigError(
            f"data set {dataset!r} has no label-derived captions; text conditioning works on "
            f"{', '.join(LABEL_CAPTIONS)} and on folder:PATH with captions"
        )
    out = table.phrasings(class_names)
    if len(out) != num_classes:
        raise ConfigError(f"the captions of {dataset!r} name {len(out)} classes but the data set has {num_classes}")
    return out


__all__ = ["LABEL_CAPTIONS", "LabelCaptions", "label_phrasings"]
