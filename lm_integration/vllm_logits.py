"""The ∞-gram prior as a vLLM logits processor (vLLM's v1 engine; 0.32 tested, CPU build).

vLLM builds logits processors from their import path when the engine starts, and each request asks
for the prior in its sampling parameters::

    import os
    from vllm import LLM, SamplingParams

    os.environ["NGRAM_INDEX"] = "indexes/my-index"   # or NGRAM_TARGET=HOST:PORT of `ngram serve`
    llm = LLM(model=..., logits_processors=["lm_integration.vllm_logits:InfgramVllmLogitsProcessor"])
    sp = SamplingParams(temperature=0.0, max_tokens=48,
                        extra_args={"infgram": {"lambda_sparse": 0.83, "lambda_dense": 0.26}})
    out = llm.generate(prompts, sp)

A request without ``extra_args["infgram"]`` is left alone. The settings are those of
``lm_integration.prior.InfgramLogitsProcessor`` (``lambda_sparse`` required; ``lambda_dense``,
``mode``, ``floor``, ``max_support``, ``max_query_len``, ``end_token_id`` optional), checked by
``validate_params``, which vLLM calls when a request arrives (a bad one gets a validation error, HTTP
400 when serving, by vLLM's own code; the benchmark sends only good ones). Each request
gets its own ``InfgramLogitsProcessor`` (its own suffix-match state), called on the request's prompt
and output tokens and its row of logits, so the arithmetic is prior.py's, not a copy; all requests
share one cache of estimates. The index comes from the environment, as for
``lm_integration.vllm_proposer`` (vLLM builds the class from its own config alone), and must have
been built with the served model's tokenizer (checked against the model folder's tokenizer.json).

vLLM refuses custom logits processors when speculative decoding is on (``speculative_config``), so
the prior and the corpus proposer do not run in one engine.

This is the only module of lm_integration that imports vLLM. Without vLLM it still imports (the
per-request part, :func:`request_options` and :class:`RequestPrior`, is tested in the project's
environment), but the processor class refuses to be built.

Measured with vLLM 0.32.0's CPU build (``bench/bench_vllm_prior.py``, SmolLM2-135M, the kernel
``sound/soc`` index, 8 prompts x 48 greedy tokens, λ 0.83 / 0.26): the same tokens as HF ``generate`` with
InfgramLogitsProcessor on 8 of 8 prompts (vLLM and HF agree without the prior too), 0.614 ms per
decoding step on the prior's own clock (CPU 0.503 ms) against 59.6 ms for vLLM's step; see
lm_integration/README.md for the command.
"""

from __future__ import annotations

import json
import os
import time

import torch

from lm_integration.infgram import InfgramCache
from lm_integration.open_source import open_source_from_env
from lm_integration.prior import InfgramLogitsProcessor, check_prior_params
from lm_integration.tokenizer_compat import check_tokenizer_compat
from lm_integration.vllm_proposer import model_tokenizer

try:
    from vllm.v1.sample.logits_processor import AdapterLogitsProcessor as _Base
except ImportError:  # the per-request part works without vLLM; the class does not
    _Base = None

ARGS_KEY = "infgram"  # SamplingParams.extra_args key holding a request's prior settings
OPTIONS = ("lambda_sparse", "lambda_dense", "mode", "floor", "max_support", "max_query_len", "end_token_id")

#: Time spent in the prior by every request of this process (wall and thread CPU seconds, calls): what
#: the plugin costs vLLM per decoding step. vLLM's CPU build runs the worker in a process of its own,
#: so with ``NGRAM_PRIOR_TIMES`` set to a file path the worker also writes them there after each call
#: (outside the timed part), for benchmarks.
TIMES = {"calls": 0, "seconds": 0.0, "cpu_seconds": 0.0}
TIMES_ENV = "NGRAM_PRIOR_TIMES"


def _publish_times(path: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        json.dump(TIMES, fh)
    os.replace(tmp, path)


def request_options(extra_args) -> dict | None:
    """A request's prior settings from its ``SamplingParams.extra_args`` (None: no prior), as
    keyword arguments of InfgramLogitsProcessor; ValueError when they are not valid."""
    opts = (extra_args or {}).get(ARGS_KEY)
    if opts is None:
        return None
    if not isinstance(opts, dict):
        raise ValueError(f"extra_args[{ARGS_KEY!r}] must be a dict of prior settings, got {type(opts).__name__}")
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown ∞-gram prior settings {unknown}; known: {list(OPTIONS)}")
    if "lambda_sparse" not in opts:
        raise ValueError(f"extra_args[{ARGS_KEY!r}] needs lambda_sparse")
    check_prior_params(opts.get("mode", "interpolate"), opts["lambda_sparse"], opts.get("lambda_dense"),
                       opts.get("floor", 1e-6))
    for name in ("max_support", "max_query_len", "end_token_id"):
        value = opts.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ValueError(f"{name} must be a non-negative integer or None, got {value!r}")
    return dict(opts)


class RequestPrior:
    """The prior of one request: called with the request's prompt ids, its output ids so far (a list
    that vLLM keeps appending to) and its row of logits; returns the row with the prior applied (the
    row itself when there was nothing to do)."""

    def __init__(self, source, options: dict, cache: InfgramCache | None = None):
        self.processor = InfgramLogitsProcessor(source, cache=cache, check_tokenizer=False, **options)
        self.times_path = os.environ.get(TIMES_ENV)

    def __call__(self, prompt_ids: list[int], output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
        t0, c0 = time.perf_counter(), time.thread_time()
        ids = torch.tensor([[*prompt_ids, *output_ids]], dtype=torch.long)
        scores = logits.unsqueeze(0)
        out = self.processor(ids, scores)
        TIMES["calls"] += 1
        TIMES["seconds"] += time.perf_counter() - t0
        TIMES["cpu_seconds"] += time.thread_time() - c0
        if self.times_path:
            _publish_times(self.times_path)
        return logits if out is scores else out[0]


class InfgramVllmLogitsProcessor(_Base or object):
    """vLLM logits processor adding the ∞-gram prior to the requests that ask for it (module docstring)."""

    def __init__(self, vllm_config, device, is_pin_memory: bool):
        if _Base is None:
            raise ImportError("InfgramVllmLogitsProcessor needs vLLM (its v1 engine's AdapterLogitsProcessor)")
        super().__init__(vllm_config, device, is_pin_memory)
        self.source = open_source_from_env()
        if self.source is None:
            raise ValueError("the ∞-gram logits processor needs an index: set NGRAM_INDEX (a directory) or "
                             "NGRAM_TARGET (HOST:PORT of ngram serve)")
        check_tokenizer_compat(self.source, model_tokenizer(vllm_config))
        self.cache = InfgramCache()

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        request_options(sampling_params.extra_args)

    def is_argmax_invariant(self) -> bool:
        return False  # the prior changes which token greedy decoding picks

    def new_req_logits_processor(self, params) -> RequestPrior | None:
        opts = request_options(params.extra_args)
        return None if opts is None else RequestPrior(self.source, opts, self.cache)
