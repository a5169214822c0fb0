"""Exceptions raised by lm_integration (it imports nothing from engine but engine.results)."""


class LMIntegrationError(Exception):
    """Base class of the errors lm_integration raises on purpose."""


class TokenizerMismatchError(LMIntegrationError, ValueError):
    """The model's tokenizer is not the index's: n-gram statistics would be about other tokens."""


class FgramVocabError(LMIntegrationError, ValueError):
    """An f-gram vocabulary file or list is malformed."""


class UnsupportedTransformersError(LMIntegrationError, RuntimeError):
    """The installed transformers is outside the range a hook into its non-public internals was tested on."""
