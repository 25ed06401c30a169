import re
from pathlib import Path

import pytest

from ddpm.errors import ConfigError
from ddpm.text.label_captions import LABEL_CAPTIONS, label_phrasings
from ddpm.text.prompts import read_labelled_prompts

UNSEEN = Path(__file__).parents[1] / "benchmarks" / "prompts" / "mnist_unseen.txt"


@pytest.mark.parametrize("name,first", [("mnist", "a handwritten zero"), ("fashion-mnist", "a photo of a t-shirt"),
                                        ("cifar10", "a photo of an airplane")])
def test_every_class_has_several_distinct_phrasings(name, first):
    per_class = label_phrasings(name, None, 10)
    assert per_class[0][0] == first
    assert all(len(p) >= 4 and len(set(p)) == len(p) for p in per_class)
    flat = [c for p in per_class for c in p]
    assert len(set(flat)) == len(flat)  # no caption names two classes


def test_a_data_set_without_names_takes_its_class_names():
    assert label_phrasings("flowers102", ["pink primrose", "hard-leaved_pocket_orchid"], 2)[1][0] == \
        "a photo of a hard-leaved pocket orchid, a type of flower"
    with pytest.raises(ConfigError, match="need class names"):
        label_phrasings("flowers102", None, 2)


def test_unknown_sets_and_class_counts_are_refused():
    with pytest.raises(ConfigError, match="'svhn' has no label-derived captions; text conditioning works on digits, mnist"):
        label_phrasings("svhn", None, 10)
    with pytest.raises(ConfigError, match="name 10 classes but the data set has 3"):
        label_phrasings("mnist", None, 3)
    assert set(LABEL_CAPTIONS) >= {"digits", "mnist", "fashion-mnist", "cifar10", "flowers102"}


def words(text: str) -> list[str]:
    """Lowercased, punctuation stripped, split on whitespace."""
    return re.sub(r"[^\w\s]", " ", text.lower()).split()


def trigrams(text: str) -> set[tuple[str, ...]]:
    w = words(text)
    return {tuple(w[i : i + 3]) for i in range(len(w) - 2)}


def shared_trigrams(prompt: str, captions) -> set[tuple[str, ...]]:
    return trigrams(prompt) & set().union(*(trigrams(c) for c in captions))


FUNCTION_WORDS = {"a", "an", "the", "of", "in", "on", "by", "onto", "across", "with", "from", "for", "that"}
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def test_the_benchmark_s_unseen_phrasings_are_unseen():
    prompts = read_labelled_prompts(UNSEEN, [str(d) for d in range(10)])
    trained = [c for p in label_phrasings("mnist", None, 10) for c in p]
    assert len(prompts) == 60 and sorted({c for c, _ in prompts}) == list(range(10))
    # no sequence of three words in common with any training caption (every template, every name)
    assert {p: shared_trigrams(p, trained) for _, p in prompts if shared_trigrams(p, trained)} == {}
    # the checker catches the old list's phrasings, which sat inside "a picture of the number {}"
    assert shared_trigrams("The number, seven!", trained) == {("the", "number", "seven")}
    assert shared_trigrams("a drawing of an 8 in ink", trained) >= {("a", "drawing", "of"), ("drawing", "of", "an")}
    # new verbs and nouns: none of the templates' own words (articles and prepositions aside)
    template_words = {w for c in trained for w in words(c)} - set(DIGIT_WORDS) - set("0123456789")
    assert {w for _, p in prompts for w in words(p)} & template_words <= FUNCTION_WORDS
    # each digit asked for both as a numeral and as a word, each prompt naming its own digit once
    for d in range(10):
        named = [set(words(p)) & {str(d), DIGIT_WORDS[d]} for c, p in prompts if c == d]
        assert all(len(n) == 1 for n in named) and set().union(*named) == {str(d), DIGIT_WORDS[d]}


def test_articles_follow_the_sound():
    digits = label_phrasings("mnist", None, 10)
    assert "a drawing of an eight" in digits[8] and "an image of an 8" in digits[8] and "a drawing of a one" in digits[1]
    assert "a photo of an ankle boot" in label_phrasings("fashion-mnist", None, 10)[9]
