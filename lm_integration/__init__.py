"""PyTorch-side consumers of the n-gram engine. Imports neither numba nor grpc.

torch-free: NgramSource, tokenizer checks, ∞-gram tracking, the context's own ∞-gram model, drafters
(TreeDrafter among them), the f-gram matcher.
Need torch (imported on first use): InfgramLogitsProcessor, speculative_generate,
generate_with_drafter, SconeEmbedding and friends.
"""

from lm_integration.context import ContextNgramModel
from lm_integration.drafter import ConstantDrafter, HybridDrafter, InfgramDrafter, NullDrafter, PromptLookupDrafter
from lm_integration.errors import FgramVocabError, LMIntegrationError, TokenizerMismatchError, UnsupportedTransformersError
from lm_integration.fgram import CausalFgramMatcher, FgramVocab, load_fgram_vocab
from lm_integration.infgram import InfgramCache, InfgramEstimate, InfgramTracker, estimate_from_ntd
from lm_integration.source import NgramSource
from lm_integration.tokenizer_compat import check_tokenizer_compat, tokenizer_fingerprint
from lm_integration.tree_drafter import TreeDrafter

_LAZY = {
    "InfgramLogitsProcessor": "lm_integration.prior",
    "speculative_generate": "lm_integration.speculative",
    "generate_with_drafter": "lm_integration.speculative",
    "speculative_generate_tree": "lm_integration.speculative",
    "SpecStats": "lm_integration.speculative",
    "SconeEmbedding": "lm_integration.scone",
    "FgramEncoder": "lm_integration.scone",
    "precompute_fgram_table": "lm_integration.scone",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lm_integration' has no attribute {name!r}")


__all__ = [
    "NgramSource", "check_tokenizer_compat", "tokenizer_fingerprint", "TokenizerMismatchError",
    "LMIntegrationError", "FgramVocabError", "UnsupportedTransformersError", "InfgramCache", "InfgramEstimate", "InfgramTracker", "estimate_from_ntd",
    "InfgramDrafter", "HybridDrafter", "PromptLookupDrafter", "NullDrafter", "ConstantDrafter", "TreeDrafter",
    "ContextNgramModel",
    "CausalFgramMatcher", "FgramVocab", "load_fgram_vocab", *_LAZY,
]
