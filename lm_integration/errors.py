"""Exceptions raised by lm_integration. A tokenizer mismatch is the engine's one
TokenizerMismatchError (engine.errors), whether the index is in process or behind a server."""

from engine.errors import TokenizerMismatchError


class LMIntegrationError(Exception):
    """Base class of the errors lm_integration raises on purpose."""


__all__ = ["LMIntegrationError", "TokenizerMismatchError", "FgramVocabError", "UnsupportedTransformersError"]


class FgramVocabError(LMIntegrationError, ValueError):
    """An f-gram vocabulary file or list is malformed."""


class UnsupportedTransformersError(LMIntegrationError, RuntimeError):
    """The installed transformers is outside the range a hook into its non-public internals was tested on."""
