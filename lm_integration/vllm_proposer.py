"""vLLM speculative-decoding proposer that drafts from an n-gram index, the context and earlier outputs.

vLLM loads a custom proposer class by its import path::

    from vllm import LLM
    llm = LLM(model=..., speculative_config={
        "method": "custom_class",
        "model": "lm_integration.vllm_proposer.CorpusProposer",
        "num_speculative_tokens": 8,
    })

The index comes from the environment, since vLLM builds the class from its own config alone:
``NGRAM_INDEX`` (an index directory, opened in the worker process) or ``NGRAM_TARGET`` (HOST:PORT of
``ngram serve``). With neither, the proposer drafts from the context and earlier outputs only. vLLM
verifies one chain per request, so each request gets the most probable chain of
``lm_integration.tree_drafter.TreeDrafter``'s tree. Needs vLLM with its ``custom_class`` method
(0.32 tested, CPU build); nothing else in lm_integration imports vLLM.
"""

from __future__ import annotations

from lm_integration.open_source import open_source_from_env
from lm_integration.tree_drafter import TreeDrafter


def model_tokenizer(vllm_config):
    """The served model's tokenizer (a ``tokenizers.Tokenizer``) when its folder has a tokenizer.json."""
    from pathlib import Path

    folder = getattr(vllm_config.model_config, "tokenizer", None)
    path = Path(folder) / "tokenizer.json" if folder else None
    if path is None or not path.is_file():
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


class CorpusProposer:
    """vLLM custom proposer: ``propose(sampled_token_ids, num_tokens_no_spec, token_ids_cpu)`` returns a
    draft (a list of token ids, possibly empty) for every request row of the batch."""

    def __init__(self, vllm_config):
        spec = vllm_config.speculative_config
        self.k = int(spec.num_speculative_tokens)
        self.max_model_len = int(vllm_config.model_config.max_model_len)
        source = open_source_from_env()
        # Refuse an index built with another tokenizer: vLLM's model folder holds the model's tokenizer.json.
        self.drafter = TreeDrafter(source, max_nodes=max(self.k, 1),
                                   tokenizer=model_tokenizer(vllm_config) if source is not None else None)

    def propose(self, sampled_token_ids, num_tokens_no_spec, token_ids_cpu, slot_mappings=None) -> list[list[int]]:
        drafts: list[list[int]] = []
        for row, sampled in enumerate(sampled_token_ids):
            n = int(num_tokens_no_spec[row])
            if not len(sampled) or n >= self.max_model_len:
                drafts.append([])  # no new token this step (prefill chunk) or no room left
                continue
            k = min(self.k, self.max_model_len - n - 1)
            context = token_ids_cpu[row, :n].tolist()
            drafts.append(self.drafter.propose(context, k, key=row) if k > 0 else [])
        return drafts

    def load_model(self, *args, **kwargs) -> None:
        """vLLM asks every proposer to load its model; this one has none."""
