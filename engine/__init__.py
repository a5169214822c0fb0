"""ngram-engine: exact n-gram and infini-gram queries over sharded suffix-array indexes.

The public surface is small: build an index, open it, query it (in-process or over gRPC).
Errors and result types load with the package; NgramIndex, build_index and NgramClient (numba,
gRPC) load when first named, so that importing an error class or a result type stays light.
"""

from engine.errors import (
    BuildError,
    ClientClosedError,
    IndexFormatError,
    IndexNotFoundError,
    InvalidQueryError,
    LimitExceededError,
    NgramError,
    ShardUnavailableError,
    TokenizerError,
    TokenizerMismatchError,
)
from engine.results import (
    Document,
    FindResult,
    InfgramNtdResult,
    InfgramProbResult,
    NextTokenDistribution,
    PackedQueries,
    ProbBatchResult,
    ProbResult,
    SearchResult,
)

__all__ = [
    "NgramClient", "BuildError", "ClientClosedError", "Document", "FindResult", "IndexFormatError", "IndexNotFoundError",
    "InfgramNtdResult", "InfgramProbResult", "InvalidQueryError", "LimitExceededError", "NextTokenDistribution",
    "NgramError", "NgramIndex", "PackedQueries", "ProbBatchResult", "ProbResult", "SearchResult",
    "ShardUnavailableError", "TokenizerError", "TokenizerMismatchError", "build_index",
]


_LAZY = {"NgramIndex": "engine.index", "build_index": "engine.build.builder", "NgramClient": "engine.serve.client"}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
