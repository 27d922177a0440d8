"""RWKV World tokenizer: id parity with the reference `rwkv` package, exact round-trips, special ids, padding, I/O."""

import time
from pathlib import Path

import pytest

from auroralong_hf.processing.tokenization_rwkv_world import (
    DEFAULT_VOCAB_FILE,
    RwkvWorldTokenizer,
    load_world_vocab,
)

PYTHON_CODE = '''class Foo:
    """Docstring."""

    def bar(self, x):
        if x:
            return [i ** 2 for i in range(x)]  # comment
        else:
\t\treturn None


if __name__ == "__main__":
    print(Foo().bar(3))
'''

PROSE = (
    "The Eiffel tower is in the city of Paris. It was built for the 1889 World's Fair, and at 330 metres it was "
    "the tallest man-made structure for 41 years! Isn't that remarkable? (Yes.) -- e-mail: test@example.com; "
    "prices: $3.50, 12%, 1,000,000.\n"
)

CORPUS = [
    "",
    " ",
    "a",
    "\n\n",
    "The Eiffel tower is in the city of",
    PROSE,
    "   leading spaces",
    "trailing spaces   ",
    "  both  \n",
    "word     word      word" + " " * 200 + "end",
    "\t\ttabs\tand\t\t\tmore\t",
    "lines\n\n\n\nwith\r\nCRLF\r\n\r\nand\rCR",
    PYTHON_CODE,
    "def f():\n        return 1\n\n\n    # odd indent\n",
    "中文文本，标点符号。日本語のテキスト、カタカナ。한국어 텍스트입니다.",
    "Emoji: 😀🎉👍🏽 family 👨‍👩‍👧‍👦 flag 🇫🇷 keycap 1️⃣",
    "Mixed: English, Ελληνικά, русский, עברית, العربية, हिन्दी, ไทย, Tiếng Việt, naïve café",
    "control \x00\x01\x7f and BOM \ufeff and ZWJ \u200d and NBSP \xa0 end",
    "----------" * 20 + "==========" * 5,
    '<html><body><p class="x">Hello &amp; goodbye</p></body></html>',
]

# A few KB of varied text, so the long-text path (many tokens, long whitespace runs) is compared too.
LONG_TEXT = "\n".join(CORPUS * 8)


@pytest.fixture(scope="module")
def tok():
    return RwkvWorldTokenizer()


@pytest.fixture(scope="module")
def ref():
    rwkv_tokenizer = pytest.importorskip("rwkv.rwkv_tokenizer")
    return rwkv_tokenizer.TRIE_TOKENIZER(DEFAULT_VOCAB_FILE)


@pytest.mark.parametrize("text", CORPUS + [LONG_TEXT], ids=range(len(CORPUS) + 1))
def test_ids_match_reference_and_round_trip(tok, ref, text):
    ids = tok.encode(text)
    assert ids == ref.encode(text)
    assert tok(text)["input_ids"] == ids  # __call__ adds no BOS/EOS either
    assert tok.decode(ids) == text
    assert tok.convert_tokens_to_string(tok.tokenize(text)) == text


def test_known_ids(tok):
    assert tok.encode("The Eiffel tower is in the city of") == [
        6699, 304, 25740, 109, 39990, 4600, 4596, 22590, 30449, 4706,
    ]  # fmt: skip
    assert tok.encode("\n\n") == [261]
    # ids 1..256 are the single bytes 0x00..0xFF.
    assert tok.encode("\x00") == [1]
    assert tok.encode_bytes(bytes([0xE4])) == [0xE4 + 1]


def test_special_tokens(tok):
    assert tok.eos_token == tok.bos_token == tok.pad_token == "<|endoftext|>"
    assert tok.eos_token_id == tok.bos_token_id == tok.pad_token_id == 0
    assert tok.unk_token is None
    assert tok.encode("a<|endoftext|>b") == [98, 0, 99]
    assert tok.decode([0]) == "<|endoftext|>"
    assert tok.decode([98, 0, 99], skip_special_tokens=True) == "ab"


def test_vocab_layout(tok):
    assert tok.vocab_size == len(tok) == len(tok.get_vocab()) == 65536
    assert tok.padding_side == "left"
    vocab = load_world_vocab(DEFAULT_VOCAB_FILE)
    assert sorted(vocab) == list(range(1, 65530))
    assert all(vocab[b + 1] == bytes([b]) for b in range(256))


def test_decode_invalid_utf8_does_not_raise(tok):
    e4 = 0xE4 + 1  # byte 0xE4 alone: the lead byte of a 3-byte character such as "中"
    assert tok.decode([e4]) == "\ufffd"
    assert tok.decode([98, e4, 99]) == "a\ufffdb"
    # Split across byte tokens, the same bytes join back into the character.
    assert tok.decode([e4, 0xB8 + 1, 0xAD + 1]) == "中"
    # Vocabulary tokens stored as bytes literals (not valid UTF-8 on their own) decode with replacement chars.
    token_id, token = next((i, b) for i, b in load_world_vocab(DEFAULT_VOCAB_FILE).items() if i > 256 and _invalid(b))
    assert "\ufffd" in tok.decode([token_id])
    assert tok.decode_bytes([98, token_id]) == b"a" + token


def _invalid(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def test_unused_and_out_of_range_ids(tok):
    unused = list(range(65530, 65534))
    assert tok.decode(unused) == ""
    assert tok.decode([98, *unused, 99]) == "ab"
    assert tok.convert_ids_to_tokens(65530) == "<|unused65530|>"
    assert tok.convert_tokens_to_ids("<|unused65533|>") == 65533
    for bad in (-1, 65536):
        with pytest.raises(ValueError, match="outside"):
            tok.decode([bad])


def test_batch_padding_is_left_with_id_0(tok):
    batch = tok(["Hi", "Hello world, how are you?"], padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    n_short = len(tok.encode("Hi"))
    n_pad = ids.shape[1] - n_short
    assert n_pad > 0
    assert ids[0, :n_pad].tolist() == [0] * n_pad
    assert ids[0, n_pad:].tolist() == tok.encode("Hi")
    assert mask[0].tolist() == [0] * n_pad + [1] * n_short
    assert mask[1].tolist() == [1] * ids.shape[1]
    assert set(batch.keys()) == {"input_ids", "attention_mask"}


def test_save_and_load_round_trip(tok, tmp_path):
    saved = tok.save_pretrained(tmp_path)
    assert str(tmp_path / "rwkv_vocab_v20230424.txt") in saved
    assert (tmp_path / "rwkv_vocab_v20230424.txt").read_bytes() == Path(DEFAULT_VOCAB_FILE).read_bytes()
    loaded = RwkvWorldTokenizer.from_pretrained(tmp_path)
    assert loaded.padding_side == "left"
    assert loaded.eos_token_id == 0
    for text in CORPUS:
        assert loaded.encode(text) == tok.encode(text)


def test_encoding_speed(tok):
    text = (LONG_TEXT * 30)[:100_000]
    start = time.perf_counter()
    ids = tok.encode(text)
    elapsed = time.perf_counter() - start
    assert tok.decode(ids) == text
    assert elapsed < 2.0, f"encoding 100K chars took {elapsed:.2f} s"


def test_visual_placeholders_are_special_tokens_on_unused_rows(tok):
    assert tok.convert_tokens_to_ids(["<image>", "<video>"]) == [65534, 65535]
    assert len(tok) == 65536  # no new embedding rows
    ids = tok("a<video><video>b<image>").input_ids
    assert ids == [98, 65535, 65535, 99, 65534]
    assert tok.decode(ids) == "a<video><video>b<image>"
    assert tok.decode(ids, skip_special_tokens=True) == "ab"


def test_a_vocabulary_file_is_parsed_again_when_it_changes(tmp_path):
    """The parse is kept per file (path, size, modification time): a rewritten file is read anew, a damaged one
    raises every time (errors are not kept), and callers get dicts of their own."""
    path = tmp_path / "vocab.txt"
    lines = [f"{i + 1} {bytes([i])!r} 1" for i in range(256)]
    path.write_text("\n".join(lines) + "\n")
    first = load_world_vocab(str(path))
    assert len(first) == 256 and load_world_vocab(str(path)) == first
    first[1] = b"changed by a caller"
    assert load_world_vocab(str(path))[1] == b"\x00"
    path.write_text("\n".join([*lines, "257 'ab' 2"]) + "\n")
    assert load_world_vocab(str(path))[257] == b"ab"
    path.write_text("\n".join([*lines, "258 'abc' 3"]) + "\n")  # another size: a cache key part
    for _ in range(2):
        with pytest.raises(ValueError, match="id 258 where id 257 was expected"):
            load_world_vocab(str(path))
