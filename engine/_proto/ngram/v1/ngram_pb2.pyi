from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TokenIds(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ids: _Optional[_Iterable[int]] = ...) -> None: ...

class Query(_message.Message):
    __slots__ = ("token_ids", "text")
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    token_ids: TokenIds
    text: str
    def __init__(self, token_ids: _Optional[_Union[TokenIds, _Mapping]] = ..., text: _Optional[str] = ...) -> None: ...

class PackedTokenIds(_message.Message):
    __slots__ = ("token_ids", "offsets")
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    token_ids: bytes
    offsets: bytes
    def __init__(self, token_ids: _Optional[bytes] = ..., offsets: _Optional[bytes] = ...) -> None: ...

class TextBatch(_message.Message):
    __slots__ = ("texts",)
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, texts: _Optional[_Iterable[str]] = ...) -> None: ...

class QueryBatch(_message.Message):
    __slots__ = ("packed", "texts")
    PACKED_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    packed: PackedTokenIds
    texts: TextBatch
    def __init__(self, packed: _Optional[_Union[PackedTokenIds, _Mapping]] = ..., texts: _Optional[_Union[TextBatch, _Mapping]] = ...) -> None: ...

class TokenDistribution(_message.Message):
    __slots__ = ("prompt_count", "token_ids", "counts", "end_count", "approx")
    PROMPT_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    END_COUNT_FIELD_NUMBER: _ClassVar[int]
    APPROX_FIELD_NUMBER: _ClassVar[int]
    prompt_count: int
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    counts: _containers.RepeatedScalarFieldContainer[int]
    end_count: int
    approx: bool
    def __init__(self, prompt_count: _Optional[int] = ..., token_ids: _Optional[_Iterable[int]] = ..., counts: _Optional[_Iterable[int]] = ..., end_count: _Optional[int] = ..., approx: _Optional[bool] = ...) -> None: ...

class PackedTokenDistributions(_message.Message):
    __slots__ = ("prompt_counts", "end_counts", "approx", "offsets", "token_ids", "counts", "suffix_lens")
    PROMPT_COUNTS_FIELD_NUMBER: _ClassVar[int]
    END_COUNTS_FIELD_NUMBER: _ClassVar[int]
    APPROX_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    SUFFIX_LENS_FIELD_NUMBER: _ClassVar[int]
    prompt_counts: bytes
    end_counts: bytes
    approx: bytes
    offsets: bytes
    token_ids: bytes
    counts: bytes
    suffix_lens: bytes
    def __init__(self, prompt_counts: _Optional[bytes] = ..., end_counts: _Optional[bytes] = ..., approx: _Optional[bytes] = ..., offsets: _Optional[bytes] = ..., token_ids: _Optional[bytes] = ..., counts: _Optional[bytes] = ..., suffix_lens: _Optional[bytes] = ...) -> None: ...

class Document(_message.Message):
    __slots__ = ("doc_ix", "doc_len", "disp_len", "needle_offset", "token_ids", "metadata_json", "shard")
    DOC_IX_FIELD_NUMBER: _ClassVar[int]
    DOC_LEN_FIELD_NUMBER: _ClassVar[int]
    DISP_LEN_FIELD_NUMBER: _ClassVar[int]
    NEEDLE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    doc_ix: int
    doc_len: int
    disp_len: int
    needle_offset: int
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    metadata_json: str
    shard: int
    def __init__(self, doc_ix: _Optional[int] = ..., doc_len: _Optional[int] = ..., disp_len: _Optional[int] = ..., needle_offset: _Optional[int] = ..., token_ids: _Optional[_Iterable[int]] = ..., metadata_json: _Optional[str] = ..., shard: _Optional[int] = ...) -> None: ...

class ServerLimits(_message.Message):
    __slots__ = ("max_message_bytes", "max_query_tokens", "max_text_bytes", "max_batch_size", "max_results_per_stream", "max_support", "max_disp_len", "max_ngram_rows", "max_clause_freq", "max_distinct_tokens")
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_QUERY_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_RESULTS_PER_STREAM_FIELD_NUMBER: _ClassVar[int]
    MAX_SUPPORT_FIELD_NUMBER: _ClassVar[int]
    MAX_DISP_LEN_FIELD_NUMBER: _ClassVar[int]
    MAX_NGRAM_ROWS_FIELD_NUMBER: _ClassVar[int]
    MAX_CLAUSE_FREQ_FIELD_NUMBER: _ClassVar[int]
    MAX_DISTINCT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    max_message_bytes: int
    max_query_tokens: int
    max_text_bytes: int
    max_batch_size: int
    max_results_per_stream: int
    max_support: int
    max_disp_len: int
    max_ngram_rows: int
    max_clause_freq: int
    max_distinct_tokens: int
    def __init__(self, max_message_bytes: _Optional[int] = ..., max_query_tokens: _Optional[int] = ..., max_text_bytes: _Optional[int] = ..., max_batch_size: _Optional[int] = ..., max_results_per_stream: _Optional[int] = ..., max_support: _Optional[int] = ..., max_disp_len: _Optional[int] = ..., max_ngram_rows: _Optional[int] = ..., max_clause_freq: _Optional[int] = ..., max_distinct_tokens: _Optional[int] = ...) -> None: ...

class GetIndexInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetIndexInfoResponse(_message.Message):
    __slots__ = ("num_tokens", "num_docs", "num_shards", "vocab_size", "token_width", "eos_token_id", "has_tokenizer", "tokenizer_kind", "tokenizer_fingerprint", "manifest_json", "info_json", "limits")
    NUM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    NUM_DOCS_FIELD_NUMBER: _ClassVar[int]
    NUM_SHARDS_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_WIDTH_FIELD_NUMBER: _ClassVar[int]
    EOS_TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    HAS_TOKENIZER_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_KIND_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    INFO_JSON_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    num_tokens: int
    num_docs: int
    num_shards: int
    vocab_size: int
    token_width: int
    eos_token_id: int
    has_tokenizer: bool
    tokenizer_kind: str
    tokenizer_fingerprint: str
    manifest_json: str
    info_json: str
    limits: ServerLimits
    def __init__(self, num_tokens: _Optional[int] = ..., num_docs: _Optional[int] = ..., num_shards: _Optional[int] = ..., vocab_size: _Optional[int] = ..., token_width: _Optional[int] = ..., eos_token_id: _Optional[int] = ..., has_tokenizer: _Optional[bool] = ..., tokenizer_kind: _Optional[str] = ..., tokenizer_fingerprint: _Optional[str] = ..., manifest_json: _Optional[str] = ..., info_json: _Optional[str] = ..., limits: _Optional[_Union[ServerLimits, _Mapping]] = ...) -> None: ...

class TokenizeRequest(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class TokenizeResponse(_message.Message):
    __slots__ = ("token_ids",)
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, token_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class DetokenizeRequest(_message.Message):
    __slots__ = ("token_ids",)
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, token_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class DetokenizeResponse(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class CountRequest(_message.Message):
    __slots__ = ("query",)
    QUERY_FIELD_NUMBER: _ClassVar[int]
    query: Query
    def __init__(self, query: _Optional[_Union[Query, _Mapping]] = ...) -> None: ...

class CountResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class CountBatchRequest(_message.Message):
    __slots__ = ("queries",)
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    queries: QueryBatch
    def __init__(self, queries: _Optional[_Union[QueryBatch, _Mapping]] = ...) -> None: ...

class CountBatchResponse(_message.Message):
    __slots__ = ("counts",)
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    counts: bytes
    def __init__(self, counts: _Optional[bytes] = ...) -> None: ...

class FindRequest(_message.Message):
    __slots__ = ("query",)
    QUERY_FIELD_NUMBER: _ClassVar[int]
    query: Query
    def __init__(self, query: _Optional[_Union[Query, _Mapping]] = ...) -> None: ...

class SuffixArraySegment(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class FindResponse(_message.Message):
    __slots__ = ("count", "segments")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    count: int
    segments: _containers.RepeatedCompositeFieldContainer[SuffixArraySegment]
    def __init__(self, count: _Optional[int] = ..., segments: _Optional[_Iterable[_Union[SuffixArraySegment, _Mapping]]] = ...) -> None: ...

class ProbRequest(_message.Message):
    __slots__ = ("prompt", "cont_id")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    CONT_ID_FIELD_NUMBER: _ClassVar[int]
    prompt: Query
    cont_id: int
    def __init__(self, prompt: _Optional[_Union[Query, _Mapping]] = ..., cont_id: _Optional[int] = ...) -> None: ...

class ProbResponse(_message.Message):
    __slots__ = ("prompt_count", "cont_count", "prob")
    PROMPT_COUNT_FIELD_NUMBER: _ClassVar[int]
    CONT_COUNT_FIELD_NUMBER: _ClassVar[int]
    PROB_FIELD_NUMBER: _ClassVar[int]
    prompt_count: int
    cont_count: int
    prob: float
    def __init__(self, prompt_count: _Optional[int] = ..., cont_count: _Optional[int] = ..., prob: _Optional[float] = ...) -> None: ...

class ProbBatchRequest(_message.Message):
    __slots__ = ("prompts", "cont_ids")
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    CONT_IDS_FIELD_NUMBER: _ClassVar[int]
    prompts: QueryBatch
    cont_ids: bytes
    def __init__(self, prompts: _Optional[_Union[QueryBatch, _Mapping]] = ..., cont_ids: _Optional[bytes] = ...) -> None: ...

class ProbBatchResponse(_message.Message):
    __slots__ = ("prompt_counts", "cont_counts", "probs")
    PROMPT_COUNTS_FIELD_NUMBER: _ClassVar[int]
    CONT_COUNTS_FIELD_NUMBER: _ClassVar[int]
    PROBS_FIELD_NUMBER: _ClassVar[int]
    prompt_counts: bytes
    cont_counts: bytes
    probs: bytes
    def __init__(self, prompt_counts: _Optional[bytes] = ..., cont_counts: _Optional[bytes] = ..., probs: _Optional[bytes] = ...) -> None: ...

class NextTokenDistributionRequest(_message.Message):
    __slots__ = ("prompt", "max_support")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_SUPPORT_FIELD_NUMBER: _ClassVar[int]
    prompt: Query
    max_support: int
    def __init__(self, prompt: _Optional[_Union[Query, _Mapping]] = ..., max_support: _Optional[int] = ...) -> None: ...

class NextTokenDistributionResponse(_message.Message):
    __slots__ = ("distribution",)
    DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    distribution: TokenDistribution
    def __init__(self, distribution: _Optional[_Union[TokenDistribution, _Mapping]] = ...) -> None: ...

class NextTokenDistributionBatchRequest(_message.Message):
    __slots__ = ("prompts", "max_support")
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    MAX_SUPPORT_FIELD_NUMBER: _ClassVar[int]
    prompts: QueryBatch
    max_support: int
    def __init__(self, prompts: _Optional[_Union[QueryBatch, _Mapping]] = ..., max_support: _Optional[int] = ...) -> None: ...

class NextTokenDistributionBatchResponse(_message.Message):
    __slots__ = ("distributions",)
    DISTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    distributions: PackedTokenDistributions
    def __init__(self, distributions: _Optional[_Union[PackedTokenDistributions, _Mapping]] = ...) -> None: ...

class InfgramProbRequest(_message.Message):
    __slots__ = ("prompt", "cont_id")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    CONT_ID_FIELD_NUMBER: _ClassVar[int]
    prompt: Query
    cont_id: int
    def __init__(self, prompt: _Optional[_Union[Query, _Mapping]] = ..., cont_id: _Optional[int] = ...) -> None: ...

class InfgramProbResponse(_message.Message):
    __slots__ = ("prompt_count", "cont_count", "prob", "suffix_len")
    PROMPT_COUNT_FIELD_NUMBER: _ClassVar[int]
    CONT_COUNT_FIELD_NUMBER: _ClassVar[int]
    PROB_FIELD_NUMBER: _ClassVar[int]
    SUFFIX_LEN_FIELD_NUMBER: _ClassVar[int]
    prompt_count: int
    cont_count: int
    prob: float
    suffix_len: int
    def __init__(self, prompt_count: _Optional[int] = ..., cont_count: _Optional[int] = ..., prob: _Optional[float] = ..., suffix_len: _Optional[int] = ...) -> None: ...

class InfgramProbBatchRequest(_message.Message):
    __slots__ = ("prompts", "cont_ids")
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    CONT_IDS_FIELD_NUMBER: _ClassVar[int]
    prompts: QueryBatch
    cont_ids: bytes
    def __init__(self, prompts: _Optional[_Union[QueryBatch, _Mapping]] = ..., cont_ids: _Optional[bytes] = ...) -> None: ...

class InfgramProbBatchResponse(_message.Message):
    __slots__ = ("prompt_counts", "cont_counts", "probs", "suffix_lens")
    PROMPT_COUNTS_FIELD_NUMBER: _ClassVar[int]
    CONT_COUNTS_FIELD_NUMBER: _ClassVar[int]
    PROBS_FIELD_NUMBER: _ClassVar[int]
    SUFFIX_LENS_FIELD_NUMBER: _ClassVar[int]
    prompt_counts: bytes
    cont_counts: bytes
    probs: bytes
    suffix_lens: bytes
    def __init__(self, prompt_counts: _Optional[bytes] = ..., cont_counts: _Optional[bytes] = ..., probs: _Optional[bytes] = ..., suffix_lens: _Optional[bytes] = ...) -> None: ...

class InfgramNextTokenDistributionRequest(_message.Message):
    __slots__ = ("prompt", "max_support")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_SUPPORT_FIELD_NUMBER: _ClassVar[int]
    prompt: Query
    max_support: int
    def __init__(self, prompt: _Optional[_Union[Query, _Mapping]] = ..., max_support: _Optional[int] = ...) -> None: ...

class InfgramNextTokenDistributionResponse(_message.Message):
    __slots__ = ("distribution", "suffix_len")
    DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    SUFFIX_LEN_FIELD_NUMBER: _ClassVar[int]
    distribution: TokenDistribution
    suffix_len: int
    def __init__(self, distribution: _Optional[_Union[TokenDistribution, _Mapping]] = ..., suffix_len: _Optional[int] = ...) -> None: ...

class InfgramNextTokenDistributionBatchRequest(_message.Message):
    __slots__ = ("prompts", "max_support")
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    MAX_SUPPORT_FIELD_NUMBER: _ClassVar[int]
    prompts: QueryBatch
    max_support: int
    def __init__(self, prompts: _Optional[_Union[QueryBatch, _Mapping]] = ..., max_support: _Optional[int] = ...) -> None: ...

class InfgramNextTokenDistributionBatchResponse(_message.Message):
    __slots__ = ("distributions",)
    DISTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    distributions: PackedTokenDistributions
    def __init__(self, distributions: _Optional[_Union[PackedTokenDistributions, _Mapping]] = ...) -> None: ...

class SearchDocumentsRequest(_message.Message):
    __slots__ = ("query", "max_docs", "max_disp_len")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    MAX_DOCS_FIELD_NUMBER: _ClassVar[int]
    MAX_DISP_LEN_FIELD_NUMBER: _ClassVar[int]
    query: Query
    max_docs: int
    max_disp_len: int
    def __init__(self, query: _Optional[_Union[Query, _Mapping]] = ..., max_docs: _Optional[int] = ..., max_disp_len: _Optional[int] = ...) -> None: ...

class SearchSummary(_message.Message):
    __slots__ = ("count", "num_documents", "approx")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    NUM_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    APPROX_FIELD_NUMBER: _ClassVar[int]
    count: int
    num_documents: int
    approx: bool
    def __init__(self, count: _Optional[int] = ..., num_documents: _Optional[int] = ..., approx: _Optional[bool] = ...) -> None: ...

class SearchDocumentsResponse(_message.Message):
    __slots__ = ("summary", "document")
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    summary: SearchSummary
    document: Document
    def __init__(self, summary: _Optional[_Union[SearchSummary, _Mapping]] = ..., document: _Optional[_Union[Document, _Mapping]] = ...) -> None: ...

class ShardRank(_message.Message):
    __slots__ = ("shard", "rank")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    shard: int
    rank: int
    def __init__(self, shard: _Optional[int] = ..., rank: _Optional[int] = ...) -> None: ...

class ShardPointer(_message.Message):
    __slots__ = ("shard", "ptr")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    PTR_FIELD_NUMBER: _ClassVar[int]
    shard: int
    ptr: int
    def __init__(self, shard: _Optional[int] = ..., ptr: _Optional[int] = ...) -> None: ...

class GetDocumentRequest(_message.Message):
    __slots__ = ("doc_ix", "rank", "pointer", "max_disp_len")
    DOC_IX_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    POINTER_FIELD_NUMBER: _ClassVar[int]
    MAX_DISP_LEN_FIELD_NUMBER: _ClassVar[int]
    doc_ix: int
    rank: ShardRank
    pointer: ShardPointer
    max_disp_len: int
    def __init__(self, doc_ix: _Optional[int] = ..., rank: _Optional[_Union[ShardRank, _Mapping]] = ..., pointer: _Optional[_Union[ShardPointer, _Mapping]] = ..., max_disp_len: _Optional[int] = ...) -> None: ...

class GetDocumentResponse(_message.Message):
    __slots__ = ("document",)
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    document: Document
    def __init__(self, document: _Optional[_Union[Document, _Mapping]] = ...) -> None: ...

class FrequentNgramsRequest(_message.Message):
    __slots__ = ("n_min", "n_max", "min_count", "top_k", "chunk_rows")
    N_MIN_FIELD_NUMBER: _ClassVar[int]
    N_MAX_FIELD_NUMBER: _ClassVar[int]
    MIN_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    CHUNK_ROWS_FIELD_NUMBER: _ClassVar[int]
    n_min: int
    n_max: int
    min_count: int
    top_k: int
    chunk_rows: int
    def __init__(self, n_min: _Optional[int] = ..., n_max: _Optional[int] = ..., min_count: _Optional[int] = ..., top_k: _Optional[int] = ..., chunk_rows: _Optional[int] = ...) -> None: ...

class FrequentNgramsSummary(_message.Message):
    __slots__ = ("num_rows", "threshold", "meta_json")
    NUM_ROWS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    META_JSON_FIELD_NUMBER: _ClassVar[int]
    num_rows: int
    threshold: int
    meta_json: str
    def __init__(self, num_rows: _Optional[int] = ..., threshold: _Optional[int] = ..., meta_json: _Optional[str] = ...) -> None: ...

class NgramRows(_message.Message):
    __slots__ = ("token_ids", "offsets", "counts")
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    token_ids: bytes
    offsets: bytes
    counts: bytes
    def __init__(self, token_ids: _Optional[bytes] = ..., offsets: _Optional[bytes] = ..., counts: _Optional[bytes] = ...) -> None: ...

class FrequentNgramsResponse(_message.Message):
    __slots__ = ("summary", "rows")
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    summary: FrequentNgramsSummary
    rows: NgramRows
    def __init__(self, summary: _Optional[_Union[FrequentNgramsSummary, _Mapping]] = ..., rows: _Optional[_Union[NgramRows, _Mapping]] = ...) -> None: ...

class LongestMatchesRequest(_message.Message):
    __slots__ = ("text", "max_len", "infgram")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MAX_LEN_FIELD_NUMBER: _ClassVar[int]
    INFGRAM_FIELD_NUMBER: _ClassVar[int]
    text: Query
    max_len: int
    infgram: bool
    def __init__(self, text: _Optional[_Union[Query, _Mapping]] = ..., max_len: _Optional[int] = ..., infgram: _Optional[bool] = ...) -> None: ...

class LongestMatchesResponse(_message.Message):
    __slots__ = ("token_ids", "lengths", "counts", "prompt_counts", "cont_counts", "probs", "suffix_lens")
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    LENGTHS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_COUNTS_FIELD_NUMBER: _ClassVar[int]
    CONT_COUNTS_FIELD_NUMBER: _ClassVar[int]
    PROBS_FIELD_NUMBER: _ClassVar[int]
    SUFFIX_LENS_FIELD_NUMBER: _ClassVar[int]
    token_ids: bytes
    lengths: bytes
    counts: bytes
    prompt_counts: bytes
    cont_counts: bytes
    probs: bytes
    suffix_lens: bytes
    def __init__(self, token_ids: _Optional[bytes] = ..., lengths: _Optional[bytes] = ..., counts: _Optional[bytes] = ..., prompt_counts: _Optional[bytes] = ..., cont_counts: _Optional[bytes] = ..., probs: _Optional[bytes] = ..., suffix_lens: _Optional[bytes] = ...) -> None: ...

class AttributeRequest(_message.Message):
    __slots__ = ("text", "min_len", "max_count", "max_docs", "max_disp_len", "creativity_n")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MIN_LEN_FIELD_NUMBER: _ClassVar[int]
    MAX_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAX_DOCS_FIELD_NUMBER: _ClassVar[int]
    MAX_DISP_LEN_FIELD_NUMBER: _ClassVar[int]
    CREATIVITY_N_FIELD_NUMBER: _ClassVar[int]
    text: Query
    min_len: int
    max_count: int
    max_docs: int
    max_disp_len: int
    creativity_n: int
    def __init__(self, text: _Optional[_Union[Query, _Mapping]] = ..., min_len: _Optional[int] = ..., max_count: _Optional[int] = ..., max_docs: _Optional[int] = ..., max_disp_len: _Optional[int] = ..., creativity_n: _Optional[int] = ...) -> None: ...

class AttributedSpan(_message.Message):
    __slots__ = ("start", "end", "count", "token_ids", "documents")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    count: int
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ..., count: _Optional[int] = ..., token_ids: _Optional[_Iterable[int]] = ..., documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ...) -> None: ...

class AttributeResponse(_message.Message):
    __slots__ = ("token_ids", "spans", "creativity", "creativity_n", "lengths", "counts")
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    SPANS_FIELD_NUMBER: _ClassVar[int]
    CREATIVITY_FIELD_NUMBER: _ClassVar[int]
    CREATIVITY_N_FIELD_NUMBER: _ClassVar[int]
    LENGTHS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    token_ids: bytes
    spans: _containers.RepeatedCompositeFieldContainer[AttributedSpan]
    creativity: float
    creativity_n: int
    lengths: bytes
    counts: bytes
    def __init__(self, token_ids: _Optional[bytes] = ..., spans: _Optional[_Iterable[_Union[AttributedSpan, _Mapping]]] = ..., creativity: _Optional[float] = ..., creativity_n: _Optional[int] = ..., lengths: _Optional[bytes] = ..., counts: _Optional[bytes] = ...) -> None: ...

class CnfClause(_message.Message):
    __slots__ = ("terms",)
    TERMS_FIELD_NUMBER: _ClassVar[int]
    terms: _containers.RepeatedCompositeFieldContainer[Query]
    def __init__(self, terms: _Optional[_Iterable[_Union[Query, _Mapping]]] = ...) -> None: ...

class CountCnfRequest(_message.Message):
    __slots__ = ("clauses", "max_clause_freq")
    CLAUSES_FIELD_NUMBER: _ClassVar[int]
    MAX_CLAUSE_FREQ_FIELD_NUMBER: _ClassVar[int]
    clauses: _containers.RepeatedCompositeFieldContainer[CnfClause]
    max_clause_freq: int
    def __init__(self, clauses: _Optional[_Iterable[_Union[CnfClause, _Mapping]]] = ..., max_clause_freq: _Optional[int] = ...) -> None: ...

class CountCnfResponse(_message.Message):
    __slots__ = ("count", "approx", "clause_counts", "scanned_clauses")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    APPROX_FIELD_NUMBER: _ClassVar[int]
    CLAUSE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    SCANNED_CLAUSES_FIELD_NUMBER: _ClassVar[int]
    count: int
    approx: bool
    clause_counts: _containers.RepeatedScalarFieldContainer[int]
    scanned_clauses: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, count: _Optional[int] = ..., approx: _Optional[bool] = ..., clause_counts: _Optional[_Iterable[int]] = ..., scanned_clauses: _Optional[_Iterable[int]] = ...) -> None: ...

class SearchDocumentsCnfRequest(_message.Message):
    __slots__ = ("clauses", "max_clause_freq", "max_docs", "max_disp_len")
    CLAUSES_FIELD_NUMBER: _ClassVar[int]
    MAX_CLAUSE_FREQ_FIELD_NUMBER: _ClassVar[int]
    MAX_DOCS_FIELD_NUMBER: _ClassVar[int]
    MAX_DISP_LEN_FIELD_NUMBER: _ClassVar[int]
    clauses: _containers.RepeatedCompositeFieldContainer[CnfClause]
    max_clause_freq: int
    max_docs: int
    max_disp_len: int
    def __init__(self, clauses: _Optional[_Iterable[_Union[CnfClause, _Mapping]]] = ..., max_clause_freq: _Optional[int] = ..., max_docs: _Optional[int] = ..., max_disp_len: _Optional[int] = ...) -> None: ...

class SearchDocumentsCnfSummary(_message.Message):
    __slots__ = ("count", "approx", "clause_counts", "scanned_clauses", "num_documents")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    APPROX_FIELD_NUMBER: _ClassVar[int]
    CLAUSE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    SCANNED_CLAUSES_FIELD_NUMBER: _ClassVar[int]
    NUM_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    count: int
    approx: bool
    clause_counts: _containers.RepeatedScalarFieldContainer[int]
    scanned_clauses: _containers.RepeatedScalarFieldContainer[int]
    num_documents: int
    def __init__(self, count: _Optional[int] = ..., approx: _Optional[bool] = ..., clause_counts: _Optional[_Iterable[int]] = ..., scanned_clauses: _Optional[_Iterable[int]] = ..., num_documents: _Optional[int] = ...) -> None: ...

class SearchDocumentsCnfResponse(_message.Message):
    __slots__ = ("summary", "document")
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    summary: SearchDocumentsCnfSummary
    document: Document
    def __init__(self, summary: _Optional[_Union[SearchDocumentsCnfSummary, _Mapping]] = ..., document: _Optional[_Union[Document, _Mapping]] = ...) -> None: ...
