"""ngram-engine: exact n-gram and infini-gram queries over sharded suffix-array indexes.

The public surface is small: build an index, open it, query it (in-process or over gRPC).
"""

from engine.build.builder import build_index
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
from engine.index import NgramIndex
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
    "BuildError", "ClientClosedError", "Document", "FindResult", "IndexFormatError", "IndexNotFoundError",
    "InfgramNtdResult", "InfgramProbResult", "InvalidQueryError", "LimitExceededError", "NextTokenDistribution",
    "NgramError", "NgramIndex", "PackedQueries", "ProbBatchResult", "ProbResult", "SearchResult",
    "ShardUnavailableError", "TokenizerError", "TokenizerMismatchError", "build_index",
]


def __getattr__(name):
    # The gRPC client is imported lazily so that `import engine` stays light.
    if name == "NgramClient":
        from engine.serve.client import NgramClient

        return NgramClient
    raise AttributeError(name)
