"""Tokenizers behind one small interface, and parallel streaming tokenization for the index builder.

Four kinds, one interface (:class:`Tokenizer`):

- ``"bytes"``: the UTF-8 bytes of the text are the ids (vocab 256). Byte 0xff never occurs in UTF-8,
  which is why a byte-level index can store tokens as u8 and still use 0xff as document separator.
- ``"huggingface"``: a ``tokenizer.json`` of the Hugging Face ``tokenizers`` library.
- ``"tiktoken"``: a ranks file (``*.tiktoken``: base64 token and rank per line) plus the pre-tokenizer
  regex (``pattern``: a regex or a preset name, e.g. ``"gpt2"``) and special tokens.
- ``"sentencepiece"``: a SentencePiece ``*.model``.

:func:`load_tokenizer` accepts ``"bytes"``, a preset name (``"gpt2"``, ``"llama3"``, ``"mistral"``:
fetched once into the cache by :mod:`engine.fetch`), a path (``tokenizer.json``, a directory holding
one, ``*.tiktoken``, ``*.model``, or a saved ``spec.json``), or a dict as returned by
:meth:`Tokenizer.save`. Every tokenizer encodes without adding special tokens and treats special-token
text in the input as plain text, so a corpus can never inject a separator or EOS by its content.

Modules: :mod:`~engine.tokenizers.base` (the interface, :func:`token_width_for`, shared helpers),
:mod:`~engine.tokenizers.byte_level`, :mod:`~engine.tokenizers.huggingface`,
:mod:`~engine.tokenizers.tiktoken_bpe`, :mod:`~engine.tokenizers.sentencepiece_model` (one backend
each), :mod:`~engine.tokenizers.load` (presets and specs) and :mod:`~engine.tokenizers.pipeline`
(parallel streaming tokenization for the builder).
"""

from engine.tokenizers.base import Tokenizer, clean_text, token_width_for
from engine.tokenizers.byte_level import BytesTokenizer
from engine.tokenizers.huggingface import HuggingFaceTokenizer, bytes_to_unicode
from engine.tokenizers.load import PRESETS, load_tokenizer
from engine.tokenizers.pipeline import encode_shard_payload, tokenize_stream, tokenize_to_payloads
from engine.tokenizers.sentencepiece_model import SentencePieceTokenizer
from engine.tokenizers.tiktoken_bpe import TIKTOKEN_PATTERNS, TiktokenTokenizer

__all__ = [
    "BytesTokenizer",
    "HuggingFaceTokenizer",
    "PRESETS",
    "SentencePieceTokenizer",
    "TIKTOKEN_PATTERNS",
    "TiktokenTokenizer",
    "Tokenizer",
    "bytes_to_unicode",
    "clean_text",
    "encode_shard_payload",
    "load_tokenizer",
    "token_width_for",
    "tokenize_stream",
    "tokenize_to_payloads",
]
