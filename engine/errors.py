"""Typed exceptions. Every user error raised by the engine is a subclass of NgramError.

Over gRPC each class travels as a status code and its own name (engine/serve/status.py), so a
client raises the same class the server raised: pick the class by what the caller did wrong, and
write the message so that it says how to fix the call.
"""


class NgramError(Exception):
    """Base class of every error the engine raises on purpose."""


class InvalidQueryError(NgramError, ValueError):
    """The query is malformed: wrong type, token id outside the vocabulary, separator id, empty, ..."""


class LimitExceededError(NgramError, ValueError):
    """The request is well formed but larger than a configured limit (query length, batch size, ...)."""


class IndexFormatError(NgramError):
    """An index directory is missing, incomplete, inconsistent or corrupt."""


class IndexNotFoundError(IndexFormatError, FileNotFoundError):
    """The index path does not exist or holds no shard files."""


class TokenizerError(NgramError):
    """A tokenizer cannot be loaded, or text was given to an index that has no tokenizer."""


class TokenizerMismatchError(TokenizerError, ValueError):
    """Two components disagree about the tokenizer (vocabulary size or fingerprint): two index
    directories, a router's shard servers, or an LM and the index (lm_integration)."""


class BuildError(NgramError):
    """An index build cannot proceed (bad input files, conflicting options, ...)."""


class ShardUnavailableError(NgramError):
    """A routed query could not reach one of its shard servers."""


class ClientClosedError(NgramError, ValueError):
    """An NgramClient was used after close() (or after its ``with`` block ended)."""


class DeadlineExceededError(NgramError, TimeoutError):
    """The call's deadline passed before the answer was ready."""


class AuthenticationError(NgramError, PermissionError):
    """The server requires a bearer token that was missing or wrong."""


class NotSupportedError(NgramError, NotImplementedError):
    """This backend cannot answer this request: e.g. a router asked for an answer that cannot be
    merged exactly from its shard servers. The message says what to ask instead."""


class RpcFailedError(NgramError):
    """A gRPC failure with no more specific engine error (CANCELLED, INTERNAL, ...)."""
