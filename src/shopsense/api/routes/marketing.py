"""Marketing over HTTP: profiles, segments and clusters (the ``marketing`` scope). Profile builds and audiences
are jobs (202, then poll ``/v1/jobs/{id}``); the short reads run on the server's reader, never its writer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Depends, Response
from pydantic import AfterValidator, BaseModel, Field

from shopsense.api.deps import require, service
from shopsense.api.errors import ApiError
from shopsense.api.routes.common import PathId, errors
from shopsense.api.routes.jobs import JobAccepted, Runner, accepted
from shopsense.domain import ID_PATTERN, Id, IsoTime, JsonBool, JsonFloat, JsonInt, checked_id
from shopsense.errors import ConfigError, NotFound, ShopsenseError
from shopsense.marketing.audiences import AudienceSpec, Target
from shopsense.marketing.campaigns import CampaignConfig
from shopsense.services import marketing_desk as desk
from shopsense.services.jobs import JobContext
from shopsense.services.keys import Scope
from shopsense.services.marketing import MarketingService, SegmentReport
from shopsense.services.serving import ServingService

router = APIRouter(prefix="/v1", tags=["marketing"])
Marketing = Annotated[Any, Depends(require(Scope.MARKETING))]
T = TypeVar("T")


class BuildProfiles(BaseModel):
    model_config = {"extra": "forbid"}

    as_of: IsoTime | None = Field(None, description="default: just after the newest event")


SegmentName = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(checked_id)]
"""A segment's name, under the rule of ids (:data:`shopsense.domain.ID_PATTERN`, stated once for the mapping's keys)."""


class SegmentsIn(BaseModel):
    model_config = {"extra": "forbid"}

    segments: dict[SegmentName, str] = Field(
        default_factory=dict,
        max_length=50,
        json_schema_extra={"propertyNames": {"minLength": 1, "maxLength": 256, "pattern": ID_PATTERN}},
        description='name -> expression, e.g. {"loyal": "recency_days <= 30 and frequency >= 3"}',
    )
    rfm: JsonBool = Field(False, description="the named RFM segments instead")
    members: JsonInt = Field(0, ge=0, le=10_000, description="return up to this many member ids per segment")


class SegmentsOut(BaseModel):
    stats: list[dict[str, Any]]
    overlaps: list[dict[str, Any]]
    members: dict[str, list[str]]


async def _run(svc: ServingService, work: Callable[[MarketingService], T]) -> T:
    """Run short marketing work through the service (on its reader, beside the writer); its errors as
    HTTP ones: an unknown campaign 404, a bad request 400, one the stored state cannot answer 409."""
    try:
        return await asyncio.wrap_future(svc.marketing(work))
    except NotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from exc
    except ConfigError as exc:
        raise ApiError(400, "invalid_request", str(exc)) from exc
    except ShopsenseError as exc:
        raise ApiError(409, "conflict", str(exc)) from exc


@router.post("/profiles/build", status_code=202, response_model=JobAccepted, responses=errors(400))
async def build(
    _: Marketing,
    jobs: Runner,
    response: Response,
    body: Annotated[BuildProfiles | None, Body()] = None,
) -> JobAccepted:
    """Start a job computing and storing every customer's profile at ``as_of`` (seconds per million events);
    its result: customers, as_of, lifecycle counts. The body is optional: without one (or with ``{}``)
    ``as_of`` is just after the newest event."""
    when = body.as_of if body is not None else None

    def work(job: JobContext) -> dict[str, Any]:
        job.progress(0.0, "building profiles")
        profiles = job.marketing.build_profiles(when)
        as_of = profiles.column("as_of")[0].as_py() if profiles.num_rows else when
        return {**MarketingService.profiles_summary(profiles), "as_of": as_of}

    return accepted(await asyncio.to_thread(jobs.submit, "profiles", work), response)


@router.get("/profiles/{user_id}", response_model=dict[str, Any], responses=errors(400, 404))
async def profile(
    user_id: PathId,
    _: Marketing,
    svc: Annotated[ServingService, Depends(service)],
) -> dict[str, Any]:
    """One customer's stored profile: RFM, interests, price band, channels, lifecycle, churn, CLV."""
    found = await _run(svc, lambda m: m.profile(user_id))
    if found is None:
        raise ApiError(404, "not_found", f"no profile for {user_id!r}")
    result: dict[str, Any] = found
    return result


@router.post("/segments", response_model=SegmentsOut, responses=errors(400, 409))
async def segments(body: SegmentsIn, _: Marketing, svc: Annotated[ServingService, Depends(service)]) -> SegmentsOut:
    """Sizes, revenue shares and overlaps of rule segments (or the RFM segments) over the stored profiles.
    A malformed expression is a 400 whose message points at the bad token."""
    if not body.segments and not body.rfm:
        return SegmentsOut(stats=[], overlaps=[], members={})  # no segments asked, none reported
    report: SegmentReport = await _run(svc, lambda m: m.rfm() if body.rfm else m.segments(body.segments))
    members = {name: report.members(name)[: body.members] for name in report.masks} if body.members else {}
    return SegmentsOut(stats=report.stats.to_pylist(), overlaps=report.overlaps.to_pylist(), members=members)


class AssignIn(BaseModel):
    model_config = {"extra": "forbid"}

    user_ids: list[Id] | None = Field(None, max_length=1_000_000)
    segment: str | None = Field(None, max_length=2000, description="audience: customers this expression selects")


@router.post("/campaigns", response_model=dict[str, Any], responses=errors(400, 409))
async def create_campaign(
    body: dict[str, Any], _: Marketing, svc: Annotated[ServingService, Depends(service)]
) -> dict[str, Any]:
    """Create or replace a campaign: name, variants (one control hold-out), channel, start/end, attribution
    window, primary metric, costs, optional target (see ``CampaignConfig``)."""
    config = await _run(svc, lambda m: m.save_campaign(CampaignConfig.parse(body, "request body")))
    created: dict[str, Any] = config.model_dump(mode="json")
    return created


@router.post("/campaigns/{name}/assign", response_model=dict[str, int], responses=errors(400, 404, 409))
async def assign(
    name: PathId,
    body: AssignIn,
    _: Marketing,
    svc: Annotated[ServingService, Depends(service)],
) -> dict[str, int]:
    """Assign an audience deterministically; users assigned before keep their variant. Users per variant."""
    counts: dict[str, int] = await _run(svc, lambda m: m.assign(name, body.user_ids, body.segment))
    return counts


@router.get("/campaigns/{name}/readout", response_model=dict[str, Any], responses=errors(400, 404, 409))
async def readout(
    name: PathId,
    _: Marketing,
    svc: Annotated[ServingService, Depends(service)],
) -> dict[str, Any]:
    """Per variant CTR, conversion, revenue per user, AOV, repurchase, ROI; lifts with 95% CIs, tests,
    sample-ratio check and the decision under the fixed-horizon rule."""
    result = await _run(svc, lambda m: m.readout(name))
    body: dict[str, Any] = result.to_dict()
    return body


class AudienceIn(BaseModel):
    model_config = {"extra": "forbid"}

    target: Target
    spec: AudienceSpec = Field(default_factory=AudienceSpec)
    segment: str | None = Field(None, max_length=2000)
    contacted: list[Id] = Field(default_factory=list, max_length=1_000_000, description="leave these out")
    horizon_days: JsonFloat = Field(30.0, gt=0, le=365)
    limit: JsonInt = Field(1000, ge=1, le=100_000, description="customers kept, best first (GET /v1/jobs/{id}/rows)")


@router.post("/audiences", status_code=202, response_model=JobAccepted, responses=errors(400, 409))
async def audiences(
    body: AudienceIn, _: Marketing, svc: Annotated[ServingService, Depends(service)], jobs: Runner, response: Response
) -> JobAccepted:
    """Start a job ranking customers by P(buying the target within the horizon) with the main reason, after
    the segment, recent-buyer, contacted, threshold and top-N cuts. An unknown target is refused here (400);
    the job's result: size, funnel, model report and ``rows`` kept, the best ``limit`` customers paged
    through ``GET /v1/jobs/{id}/rows``."""
    await _run(svc, lambda m: m.check_target(body.target))

    work = desk.audience_work(
        body.target,
        body.spec,
        segment=body.segment,
        contacted=body.contacted,
        horizon_days=body.horizon_days,
        limit=body.limit,
    )
    return accepted(await asyncio.to_thread(jobs.submit, desk.AUDIENCE_JOB, work), response)
