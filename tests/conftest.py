import numpy as np
import pytest

from engine import build_index, NgramIndex

# Token alphabets per width: ids whose byte order differs from their numeric order, so a kernel
# that compares tokens numerically instead of in stored byte order fails.
ALPHABETS = {
    1: [0, 1, 2, 0x7F, 0xFE],
    2: [1, 0x100, 0x101, 0x2000, 0xFFFE],
    4: [1, 0x100, 0x10000, 0x1000001, 0xFFFFFFFE],
}
VOCAB = {1: 255, 2: 65535, 4: 0xFFFFFFFF}


def build_from_token_docs(directory, docs, token_width, shard_bytes=None):
    """Build an index of ``docs`` (lists of ids) at ``token_width``; return the opened NgramIndex."""
    arrays = [np.asarray(d, dtype=np.int64) for d in docs]
    build_index(directory, documents=arrays, tokenizer=None, vocab_size=VOCAB[token_width],
                shard_bytes=shard_bytes, metadata=True)
    return NgramIndex.open(directory)


@pytest.fixture
def tiny_index(tmp_path):
    docs = [[1, 2, 3, 1, 2], [2, 3], [], [1], [3, 1, 2, 3, 3]]
    return build_from_token_docs(tmp_path / "tiny", docs, 1), docs
