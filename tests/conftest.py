import pytest

from tests.helpers.corpora import build_from_token_docs


@pytest.fixture
def tiny_index(tmp_path):
    docs = [[1, 2, 3, 1, 2], [2, 3], [], [1], [3, 1, 2, 3, 3]]
    return build_from_token_docs(tmp_path / "tiny", docs, 1), docs
