"""Request and response bodies, as documented in the OpenAPI schema."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, ValidationInfo, WithJsonSchema, field_validator

from shopsense.domain import ID_PATTERN, Id, IsoTime, UtcDatetime, checked_id
from shopsense.services.bundles import BundleInfo
from shopsense.services.coordination import ReplicaInfo


class ErrorDetail(BaseModel):
    field: str | None = Field(None, description="where: e.g. query.k, body.events.3.timestamp")
    message: str


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer has this shape."""

    code: str = Field(description="machine-readable: unauthenticated, forbidden, rate_limited, invalid_request…")
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    error: ErrorBody


class RejectedItem(BaseModel):
    index: int = Field(description="position of the item in the request (0 for a single object)")
    field: str | None = None
    reason: str


class WriteResponse(BaseModel):
    """Accepted items are committed (durable) before this response is sent; rejected ones were not written."""

    accepted: int
    rejected: list[RejectedItem]


class RecommendedItem(BaseModel):
    item_id: str
    title: str | None = None
    score: float | None = None
    p_attention: float | None = Field(None, description="P(the user views/clicks it in the next window)")
    p_purchase: float | None = Field(None, description="P(the user buys it in the next window)")
    value: float | None = None
    pinned: bool = False
    sources: list[str] = Field(default_factory=list, description="candidate sources that proposed it")
    reason: str = Field(description="readable explanation from the strongest evidence")
    evidence: str | None = None
    related_item: str | None = None
    contributions: dict[str, float] = Field(default_factory=dict, description="score contribution per evidence")


Texts = Annotated[list[str] | None, WithJsonSchema({"type": "array", "items": {"type": "string"}, "maxItems": 20})]
"""A repeated query parameter (``brand=a&brand=b``). Optional parameters are documented without ``null``,
which a query string cannot carry: a client omits them."""


class RecommendationQuery(BaseModel):
    """The query parameters of GET /v1/recommendations."""

    user_id: Id
    k: int = Field(10, ge=1, le=100, description="how many items")
    alpha: float | None = Field(None, ge=0, le=1, description="1 = attention only, 0 = purchase x value only")
    diversity: float | None = Field(None, ge=0, le=1, description="MMR lambda: 1 = off, lower = varied")
    category: Texts = Field(None, max_length=20, description="only these categories")
    exclude_category: Texts = Field(None, max_length=20)
    brand: Texts = Field(None, max_length=20, description="only these brands")
    min_price: float | None = Field(None, ge=0, le=1e12)
    max_price: float | None = Field(None, ge=0, le=1e12)
    channel: Annotated[str | None, WithJsonSchema({"type": "string", "maxLength": 32})] = Field(
        None, max_length=32, description="where it will be shown (recorded)"
    )

    @field_validator("max_price")
    @classmethod
    def _not_below_min(cls, value: float | None, info: ValidationInfo) -> float | None:
        low = info.data.get("min_price")
        if value is not None and low is not None and low > value:
            raise ValueError(f"max_price ({value:g}) is below min_price ({low:g})")
        return value

    def rules(self) -> dict[str, Any] | None:
        """The business rules asked for, named as the pipeline names them; None when there are none."""
        asked = {
            "include_categories": self.category,
            "exclude_categories": self.exclude_category,
            "include_brands": self.brand,
            "min_price": self.min_price,
            "max_price": self.max_price,
        }
        return {name: value for name, value in asked.items() if value is not None and value != []} or None  # 0 counts


class RecommendationResponse(BaseModel):
    recommendation_id: str = Field(description="send it back with POST /v1/impressions to attribute outcomes")
    user_id: str
    model_version: str | None = Field(description="the bundle that answered; null when a fallback did")
    fallback: str | None = Field(None, description="why the answer is trending items instead of the model's")
    cached: bool = False
    items: list[RecommendedItem]


class SimilarItem(BaseModel):
    item_id: str
    title: str | None = None
    score: float


class SimilarResponse(BaseModel):
    item_id: str
    model_version: str | None
    items: list[SimilarItem]


class HistoryEvent(BaseModel):
    event_id: str | None = None
    item_id: str
    type: str
    timestamp: UtcDatetime
    channel: str | None = None
    session_id: str | None = None
    quantity: float
    value: float | None = None


class HistoryResponse(BaseModel):
    user_id: str
    events: list[HistoryEvent]


class ImpressionIn(BaseModel):
    """What was shown to a user: the items of one recommendation response, in display order."""

    model_config = {"extra": "forbid"}

    recommendation_id: Annotated[
        str, Field(min_length=1, max_length=64, json_schema_extra={"pattern": ID_PATTERN}), AfterValidator(checked_id)
    ]
    user_id: Id
    item_ids: list[Id] = Field(min_length=1, max_length=1000)
    timestamp: IsoTime | None = Field(None, description="default: now")
    model_version: str | None = Field(None, max_length=64, description="default: the version that answered")


class ImpressionReportRow(BaseModel):
    model_version: str
    impressions: int
    recommendations: int
    clicks: int
    purchases: int
    revenue: float
    ctr: float | None
    conversion: float | None


class ImpressionReport(BaseModel):
    window_hours: float
    versions: list[ImpressionReportRow]


class ErasureModels(BaseModel):
    """What an erasure means for the trained models."""

    trained_on_user: bool = Field(
        description="a stored bundle may have learnt from the user (its data range covers their events, "
        "or it held precomputed answers for them)"
    )
    bundles: list[str] = Field(description="those bundles, as pipeline/version")
    answers_removed: int = Field(description="precomputed answer rows cut from the stored bundles")
    answers_not_purged: list[str] = Field(
        default=[],
        description="bundles whose stored answers could not be rewritten (logged; they still never answer for the "
        "user, since every bundle is checked against the tombstones when loaded)",
    )
    served_as: str = Field(description="how every bundle treats the id from now on")
    forgotten_at: str = Field(description="when model weights stop reflecting the user's events")


class EraseResponse(BaseModel):
    user_id: str
    deleted: dict[str, int] = Field(description="rows deleted per store table")
    models: ErasureModels | None = None


class ExportResponse(BaseModel):
    user: dict[str, Any]
    events: list[HistoryEvent]


class ModelsResponse(BaseModel):
    serving: str | None
    pinned: str | None
    error: str | None
    versions: list[BundleInfo] = Field(description="bundles on disk, newest first")


class ReplicasResponse(BaseModel):
    this: str = Field(description="the replica that answered")
    replicas: list[ReplicaInfo] = Field(
        description="servers of this store seen in the last few seconds, oldest first, each with the bundle it serves"
    )


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    ready: bool
    model_version: str | None
    detail: str | None = None
