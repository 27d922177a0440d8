"""RWKV "World" tokenizer (vocabulary ``rwkv_vocab_v20230424``) as a transformers slow tokenizer.

The World tokenizer is byte level: the UTF-8 bytes of the whole input are split by greedy longest match against
65,529 byte-string tokens (ids 1..65529). There is no normalisation, no pre-tokenisation (no splitting on spaces or
punctuation) and no BOS token, so every valid ``str`` round-trips exactly, whitespace included.

Id layout (the model's embedding has 65,536 rows):

* ``0``: ``"<|endoftext|>"``, the end-of-text / document separator; used as eos, bos and pad token.
* ``1..256``: the single bytes ``0x00..0xFF`` (byte ``b`` has id ``b + 1``), so any input can be encoded.
* ``257..65529``: multi-byte tokens from the vocabulary file.
* ``65534``, ``65535``: ``"<image>"`` and ``"<video>"``, the visual placeholders (special tokens).
* ``65530..65533``: unused embedding rows. Their token strings are placeholders ``"<|unused65530|>"`` etc. and
  they decode to the empty string (rather than raising), so a stray sampled id cannot break generation.

Token strings: a vocabulary token is its raw bytes mapped one-to-one onto the code points U+0000..U+00FF
(``bytes.decode("latin-1")``), so every token is a ``str`` even when it is not valid UTF-8 on its own (e.g. half
of a CJK character), and ``convert_tokens_to_string`` recovers the exact bytes before decoding them as UTF-8.
"""

from __future__ import annotations

import ast
import functools
import os
import shutil
from collections import Counter

from transformers import PreTrainedTokenizer

VOCAB_FILE_NAME = "rwkv_vocab_v20230424.txt"
# The file shipped next to this module, so `RwkvWorldTokenizer()` works offline without arguments.
DEFAULT_VOCAB_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), VOCAB_FILE_NAME)

EOT_TOKEN = "<|endoftext|>"
EOT_ID = 0
# Placeholders of visual tokens in the text: two of the embedding rows the vocabulary file leaves unused, so the
# model needs no new rows. The processor expands each one into a frame's run of visual tokens.
IMAGE_TOKEN, IMAGE_ID = "<image>", 65534
VIDEO_TOKEN, VIDEO_ID = "<video>", 65535
VISUAL_TOKENS = {IMAGE_ID: IMAGE_TOKEN, VIDEO_ID: VIDEO_TOKEN}
# The RWKV World models have 65536 embedding rows; the vocabulary file only fills ids 1..65529.
MODEL_VOCAB_SIZE = 65536

# Key under which a trie node stores the id of the token that ends at that node. Byte keys are 0..255, so -1
# cannot clash with a child edge.
_TOKEN_ID = -1


def load_world_vocab(vocab_file: str) -> dict[int, bytes]:
    """Parse an RWKV World vocabulary file into ``{id: token_bytes}`` (a new dict; the parse of a file is kept for as
    long as the file's path, size and modification time stay the same: a process makes many tokenizers from the
    shipped vocabulary, and parsing its 65k literals takes about a second).

    Each line is ``<id> <Python literal> <byte length>``; the literal is a ``str`` (stored as its UTF-8 bytes) or a
    ``bytes`` literal for tokens that are not valid UTF-8. Literals are parsed with ``ast.literal_eval``, never
    ``eval``, and the stated byte length is checked. The ids run 1, 2, 3, ... line after line, below 65536, and ids
    1..256 are the single bytes 0x00..0xFF (every input can be encoded).

    Raises:
        ValueError: naming the file and the line, for a line that is not UTF-8 or does not parse, an id out of order
            or out of range, a wrong byte length, a repeated or empty token; or naming the file when it holds no
            token at all (empty).
        OSError: the file cannot be read (FileNotFoundError, IsADirectoryError, ...).
    """
    stat = os.stat(vocab_file)
    return dict(_parse_world_vocab(os.path.realpath(vocab_file), stat.st_size, stat.st_mtime_ns, str(vocab_file)))


@functools.lru_cache(maxsize=4)
def _parse_world_vocab(path: str, size: int, mtime_ns: int, vocab_file: str) -> dict[int, bytes]:
    """`load_world_vocab`'s parse of the file at `path` (its size and mtime are the cache's key; `vocab_file` is the
    name errors use). A parse that raises is not kept."""
    vocab: dict[int, bytes] = {}
    first_line: dict[bytes, int] = {}
    # Read as bytes and decode each line on its own, so that bytes that are not UTF-8 are reported with their line
    # (a text-mode read fails somewhere inside a buffer, with no line number).
    with open(vocab_file, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            where = f"{vocab_file}:{line_no}"
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as error:
                raise ValueError(f"{where}: not UTF-8 text ({error.reason} at byte {error.start} of the line); "
                                 "not an RWKV World vocabulary file.") from None
            if not line:
                continue
            try:
                # The literal itself may contain spaces, so split off the first and the last field only.
                idx_text, rest = line.split(" ", 1)
                literal, length_text = rest.rsplit(" ", 1)
                idx, length = int(idx_text), int(length_text)
                value = ast.literal_eval(literal)
                token = value.encode("utf-8") if isinstance(value, str) else value
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as error:
                # UnicodeEncodeError (a str literal with a lone surrogate) is a ValueError
                raise ValueError(f"{where}: does not parse as `<id> <str or bytes literal> <byte length>` "
                                 f"({type(error).__name__}: {error}): {line[:80]!r}") from None
            if not isinstance(token, bytes):
                raise ValueError(f"{where}: expected a str or bytes literal, got {type(value).__name__}")
            expected = len(vocab) + 1
            if idx != expected:
                raise ValueError(f"{where}: id {idx} where id {expected} was expected (the ids run 1, 2, 3, ... "
                                 "line after line): lines missing, repeated or out of order.")
            if idx >= MODEL_VOCAB_SIZE:
                raise ValueError(f"{where}: id {idx} is beyond the model's {MODEL_VOCAB_SIZE} embedding rows.")
            if len(token) != length:
                raise ValueError(f"{where}: token is {len(token)} bytes, the file says {length_text}")
            if idx <= 256 and token != bytes([idx - 1]):
                raise ValueError(f"{where}: id {idx} must be the single byte 0x{idx - 1:02X}, got {token!r} "
                                 "(ids 1..256 are the bytes 0x00..0xFF).")
            if not token:
                raise ValueError(f"{where}: empty token.")
            if token in first_line:
                raise ValueError(f"{where}: token {token!r} repeats line {first_line[token]}.")
            first_line[token] = line_no
            vocab[idx] = token
    if len(vocab) < 256:
        raise ValueError(f"{vocab_file}: " + ("the vocabulary file is empty" if not vocab else
                                              f"it ends after id {len(vocab)}") +
                         "; an RWKV World vocabulary starts with the 256 single bytes (ids 1..256).")
    return vocab


class RwkvWorldTokenizer(PreTrainedTokenizer):
    """The RWKV World tokenizer: greedy longest match over UTF-8 bytes with a byte trie.

    Encoding matches ``rwkv.rwkv_tokenizer.TRIE_TOKENIZER`` id for id on any text that does not contain the literal
    special token text ``"<|endoftext|>"`` (which, as usual in transformers, is mapped to id 0). No special tokens are
    added when encoding (``add_special_tokens`` has nothing to add), and padding is on the left by default because
    an RNN generating after a right-padded prompt would have consumed the padding.

    Decoding joins the bytes of all tokens and decodes them as UTF-8 with ``errors="replace"``: an incomplete or
    invalid byte sequence becomes U+FFFD instead of raising. Ids 65530..65535 (unused) decode to ``""``; ids outside
    ``[0, 65536)`` that are not added tokens raise ``ValueError``.

    Args:
        vocab_file (`str`, *optional*):
            Path to ``rwkv_vocab_v20230424.txt``. Defaults to the copy shipped with this package.
        eos_token, bos_token, pad_token (`str`, *optional*, defaults to ``"<|endoftext|>"``):
            All three are id 0, the document separator the RWKV models were trained with.
        padding_side (`str`, *optional*, defaults to ``"left"``).
    """

    vocab_files_names = {"vocab_file": VOCAB_FILE_NAME}
    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "left"

    def __init__(
        self,
        vocab_file: str | None = None,
        eos_token: str = EOT_TOKEN,
        bos_token: str = EOT_TOKEN,
        pad_token: str = EOT_TOKEN,
        padding_side: str = "left",
        clean_up_tokenization_spaces: bool = False,
        **kwargs,
    ):
        self.vocab_file = vocab_file if vocab_file is not None else DEFAULT_VOCAB_FILE
        id_to_bytes = load_world_vocab(self.vocab_file)  # ids 1..n consecutive, 1..256 the bytes (checked)

        # id -> token string (latin-1 view of the bytes); unused ids get placeholder names so that the id space
        # equals the model's embedding rows (len(tokenizer) == 65536, tokens added later get ids >= 65536).
        self._id_to_token: list[str] = [EOT_TOKEN] + [""] * (MODEL_VOCAB_SIZE - 1)
        self._unused_tokens: set[str] = set()
        for idx in range(1, MODEL_VOCAB_SIZE):
            if idx in id_to_bytes:
                self._id_to_token[idx] = id_to_bytes[idx].decode("latin-1")
            elif idx in VISUAL_TOKENS:
                self._id_to_token[idx] = VISUAL_TOKENS[idx]
            else:
                self._id_to_token[idx] = f"<|unused{idx}|>"
                self._unused_tokens.add(self._id_to_token[idx])
        self._token_to_id: dict[str, int] = {tok: idx for idx, tok in enumerate(self._id_to_token)}
        if len(self._token_to_id) != MODEL_VOCAB_SIZE:  # the file's tokens are distinct (checked when loaded)
            token = next(tok for tok, count in Counter(self._id_to_token).items() if count > 1)
            ids = [idx for idx, tok in enumerate(self._id_to_token) if tok == token]
            raise ValueError(f"{self.vocab_file}: ids {ids} are all {token!r}: a token of the file is the name of a "
                             "special or placeholder token.")

        # Byte trie as nested dicts: node[byte] -> child node, node[_TOKEN_ID] -> id of the token ending here.
        self._trie: dict[int, dict] = {}
        for idx, token in id_to_bytes.items():
            node = self._trie
            for byte in token:
                node = node.setdefault(byte, {})
            node[_TOKEN_ID] = idx

        # The base class calls get_vocab() while registering the special tokens, so the vocab must exist first.
        kwargs.setdefault("extra_special_tokens", [IMAGE_TOKEN, VIDEO_TOKEN])
        super().__init__(
            eos_token=eos_token,
            bos_token=bos_token,
            pad_token=pad_token,
            padding_side=padding_side,
            # Cleaning up "tokenization spaces" would change the text; byte-level decoding must be exact.
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
            **kwargs,
        )

    @property
    def vocab_size(self) -> int:
        """Size of the base id space, 65536 (the model's embedding rows), excluding tokens added later."""
        return MODEL_VOCAB_SIZE

    def get_vocab(self) -> dict[str, int]:
        """Token string -> id for all 65536 base ids plus added tokens (a new dict each call)."""
        vocab = dict(self._token_to_id)
        vocab.update(self._added_tokens_encoder)
        return vocab

    def encode_bytes(self, data: bytes) -> list[int]:
        """Greedy longest-match ids of a byte string (no special tokens, no added tokens); ``len`` <= ``len(data)``."""
        trie = self._trie
        ids: list[int] = []
        pos, end = 0, len(data)
        while pos < end:
            # Walk down the trie as far as the input allows; remember the last node that ends a token. Every
            # single byte is a token, so each step consumes at least one byte.
            node = trie
            best_id, best_end = -1, pos
            i = pos
            while i < end:
                node = node.get(data[i])
                if node is None:
                    break
                i += 1
                token_id = node.get(_TOKEN_ID)
                if token_id is not None:
                    best_id, best_end = token_id, i
            ids.append(best_id)
            pos = best_end
        return ids

    def decode_bytes(self, ids: list[int]) -> bytes:
        """Raw bytes of ``ids`` (the inverse of `encode_bytes`); id 0 gives ``b"<|endoftext|>"``, unused ids ``b""``."""
        return self.convert_tokens_to_bytes(self.convert_ids_to_tokens([int(i) for i in ids]))

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        """Split ``text`` (already cut at added tokens by the base class) into latin-1 token strings."""
        try:
            data = text.encode("utf-8")  # strict: a str with lone surrogates is not valid text
        except UnicodeEncodeError as error:
            # e.g. bytes that were not UTF-8 on a command line (Python keeps them as surrogates \udc80..\udcff)
            raise ValueError(f"The text is not valid Unicode: {text[error.start]!r} (a lone surrogate) at character "
                             f"{error.start}; text read from bytes that are not UTF-8?") from None
        return [self._id_to_token[i] for i in self.encode_bytes(data)]

    def _convert_token_to_id(self, token: str) -> int:
        try:
            return self._token_to_id[token]
        except KeyError:
            # Every byte is a token, so there is no unk token; an unknown string is a caller error.
            raise ValueError(f"{token!r} is not a token of the RWKV World vocabulary") from None

    def _convert_id_to_token(self, index: int) -> str:
        if not 0 <= index < MODEL_VOCAB_SIZE:
            raise ValueError(f"Token id {index} is outside the RWKV World vocabulary [0, {MODEL_VOCAB_SIZE})")
        return self._id_to_token[index]

    def convert_tokens_to_bytes(self, tokens: list[str]) -> bytes:
        """Concatenate the bytes of ``tokens``: added/special tokens as UTF-8, placeholders as nothing, base tokens
        through their latin-1 view."""
        out = bytearray()
        added = self._added_tokens_encoder
        for token in tokens:
            if token in added:
                out += token.encode("utf-8")
            elif token in self._unused_tokens:
                continue
            else:
                try:
                    out += token.encode("latin-1")
                except UnicodeEncodeError:
                    raise ValueError(f"{token!r} is not a token of the RWKV World vocabulary") from None
        return bytes(out)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Exact inverse of tokenisation for valid text; invalid/incomplete UTF-8 becomes U+FFFD, never an error."""
        return self.convert_tokens_to_bytes(tokens).decode("utf-8", errors="replace")

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        """Copy the vocabulary file into ``save_directory``; returns its path as a 1-tuple."""
        if not os.path.isdir(save_directory):
            raise ValueError(f"Vocabulary path ({save_directory}) should be a directory")
        prefix = f"{filename_prefix}-" if filename_prefix else ""
        out_file = os.path.join(save_directory, prefix + VOCAB_FILE_NAME)
        # Copy rather than re-serialise: the file is the reference format (and licence-carrying artefact) as is.
        if os.path.abspath(out_file) != os.path.abspath(self.vocab_file):
            shutil.copyfile(self.vocab_file, out_file)
        return (out_file,)
