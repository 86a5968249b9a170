"""Request and response bodies of the HTTP API (pydantic), which FastAPI validates and documents at ``/docs``.

Limits that depend on the server's :class:`searchkit.config.ServeConfig` (``max_k``, ``max_rerank_depth``,
``max_batch_queries``) are checked by the routes, which answer 400 with one line; these models reject what is
malformed whatever the settings (422), including unknown keys, so a typo is never silently ignored. The types are
strict: ``"k": true``, ``"k": "3"`` and ``"k": 2.0`` are not the integer a client meant to send, nor ``"rerank":
"false"`` a boolean, so each is refused (422, naming the field) rather than converted.

>>> SearchRequest(query="cats").k
10
>>> from pydantic import ValidationError
>>> try:
...     SearchRequest.model_validate_json('{"query": "cats", "k": true}')
... except ValidationError as err:
...     print(err.errors()[0]["loc"], err.errors()[0]["msg"])
('k',) Input should be a valid integer
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from searchkit.config import ServeConfig

Field_ = Literal["title", "text"]


class SearchOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    k: int = Field(ServeConfig.k, ge=1, description="Hits per query (at most the server's max_k).")
    mode: str | None = Field(
        None, description="auto, bm25, dense, hybrid or cascade; default: the mode the server was started with."
    )
    rerank: bool | None = Field(None, description="Rerank with the server's reranker; default: when it has one.")
    rerank_depth: int | None = Field(
        None, ge=1, description="First-stage hits the reranker re-scores; default: the reranker's depth."
    )
    fields: list[Field_] = Field(default_factory=list, description="Document fields returned with each hit.")
    filter: list[str] = Field(
        default_factory=list,
        description="Metadata conditions every hit meets, applied inside each stage before its top k, e.g. "
        '["year>=2020", "lang=en"] (the CLI\'s --filter grammar: =, !=, <, <=, >, >=, in).',
    )


class SearchRequest(SearchOptions):
    """One query."""

    query: str = Field(description="The query text (not empty).")


class BatchRequest(SearchOptions):
    """Several queries with the same settings, answered by one Searcher call."""

    queries: list[str] = Field(min_length=1, description="Query texts (none empty; at most max_batch_queries).")


class StageOut(BaseModel):
    rank: int | None = Field(description="1-based rank in this stage; null when the stage did not return the hit.")
    score: float | None


class HitOut(BaseModel):
    rank: int
    doc_id: str
    score: float
    title: str | None = None
    text: str | None = None


class ExplainedHitOut(HitOut):
    stages: dict[str, StageOut] = Field(description="Rank and score in every stage that ran (bm25, dense, ...).")


class _Answer(BaseModel):
    mode: str = Field(description="The mode that answered (auto resolved).")
    k: int
    rerank: bool
    fingerprint: str = Field(description="The answering index generation (sha256 of its manifest).")
    took_ms: float


class SearchResponse(_Answer):
    query: str
    hits: list[HitOut]
    request_id: str | None = Field(
        None,
        description="What this answer was logged under, for POST /feedback (null: the server logs no feedback).",
    )


class QueryHits(BaseModel):
    query: str
    hits: list[HitOut]


class BatchResponse(_Answer):
    results: list[QueryHits]


class ExplainResponse(_Answer):
    query: str
    hits: list[ExplainedHitOut]


class ReloadRequest(BaseModel):
    """Optional: a reranker folder to serve instead of the current one (the index is not re-opened)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="A reranker folder written by `searchkit train`; loaded only if its card's dev guard passed.",
    )


class FeedbackRequest(BaseModel):
    """One event on a result of a /search answer: a click, a graded judgment (value: the grade) or a dwell time
    (value: seconds)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    request_id: str = Field(min_length=1, max_length=64, description="The answer's request_id.")
    doc_id: str = Field(min_length=1, max_length=1024, description="The result's doc_id.")
    rank: int = Field(ge=1, le=1_000_000, description="Its 1-based rank as shown.")
    type: Literal["click", "judgment", "dwell"] = "click"
    value: float | None = Field(
        None, allow_inf_nan=False, description="judgment: the grade (>= 0); dwell: seconds (>= 0); click: none."
    )

    @model_validator(mode="after")
    def _value_fits_type(self) -> FeedbackRequest:
        if self.type == "click" and self.value is not None:
            raise ValueError("a click has no value")
        if self.type != "click" and (self.value is None or self.value < 0):
            raise ValueError(
                f"a {self.type} needs a value >= 0 ({'the grade' if self.type == 'judgment' else 'seconds'})"
            )
        return self


class FeedbackResponse(BaseModel):
    recorded: bool = Field(description="true: committed to the log (it survives a crash of the server)")
    request_id: str
    kind: str


class ReloadResponse(BaseModel):
    status: str = Field(description="reloaded, or restarting (several workers: each opens the index again)")
    model: str | None = Field(None, description="With a model: the reranker now served, and its fingerprint.")
    model_version: str | None = None
    fingerprint: str | None = None
    previous: str | None = None
    generation: int | None = None
    seconds: float | None = None


class HealthResponse(BaseModel):
    status: str
    version: str
    index: dict[str, Any]
    default_mode: str
    modes: list[str]
    models: dict[str, str | None]
    rerank_depth: int | None
    reloads: int


class ErrorOut(BaseModel):
    detail: str = Field(description="What was wrong, in one line.")
