import pytest

from ddpm.errors import ConfigError
from ddpm.text.prompts import read_labelled_prompts, read_prompts


def test_prompt_files(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("# a comment\n\na  handwritten seven \nthe number 3\n", encoding="utf-8")
    assert read_prompts(f) == ["a handwritten seven", "the number 3"]
    f.write_text("7: the number seven\nseven: a 7: with a colon\n  2 :two\n", encoding="utf-8")
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven"]
    assert read_labelled_prompts(f, names) == [(7, "the number seven"), (7, "a 7: with a colon"), (2, "two")]


@pytest.mark.parametrize("text,message", [
    ("# only a comment\n", "holds no prompt"),
    ("no class here\n", r"p.txt:1: expected 'CLASS: prompt'"),
    ("7:\n", "expected 'CLASS: prompt'"),
    ("12: too big\n", r"p.txt:1: unknown class '12'; use an index 0 to 9 or a class name"),
])
def test_bad_prompt_files(tmp_path, text, message):
    f = tmp_path / "p.txt"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        read_labelled_prompts(f, [str(d) for d in range(10)])


def test_unreadable_prompt_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the prompts file"):
        read_prompts(tmp_path / "missing.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        read_prompts(tmp_path / "bin.txt")
