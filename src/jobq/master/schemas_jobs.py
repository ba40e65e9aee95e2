"""Request and response shapes of the bulk action and the workflow graph (`bulk.py`), apart
from schemas.py so neither module grows past a reader's page count."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..states import JobState
from .schemas import NAME_PATTERN

#: The most jobs one bulk request acts on.
MAX_BULK = 10_000


class BulkFilter(BaseModel):
    """The jobs to act on: the same filter `GET /v1/jobs` lists with."""

    model_config = ConfigDict(extra="forbid")

    state: JobState | None = None
    queue: str | None = Field(default=None, min_length=1, max_length=200, pattern=NAME_PATTERN)
    task: str | None = Field(default=None, min_length=1, max_length=200)
    worker: str | None = Field(default=None, min_length=1, max_length=200)
    q: str | None = Field(default=None, min_length=1, max_length=200)


class BulkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["retry", "cancel", "delete"]
    filter: BulkFilter = Field(default_factory=lambda: BulkFilter(state=None))
    expect: int | None = Field(
        None,
        ge=0,
        description="The count the user confirmed: 409 (with the current count) if the "
        "filter matches another number now.",
    )
    limit: int = Field(1000, ge=1, le=MAX_BULK, description="Act on at most this many jobs.")
    dry_run: bool = Field(False, description="Count only; change nothing.")


class Skipped(BaseModel):
    id: str
    reason: str


class BulkOut(BaseModel):
    action: str
    matched: int
    done: int
    skipped: list[Skipped]
    dry_run: bool = False
    truncated: bool = Field(
        False, description="The scan bound was hit: the filter may match more jobs."
    )


class BulkConflict(BaseModel):
    error: str
    matched: int


class GraphNode(BaseModel):
    id: str
    task: str | None
    state: str | None = Field(description="Null: the job expired (only its id is known).")
    queue: str | None


class GraphEdge(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from", serialization_alias="from")
    to: str


class GraphOut(BaseModel):
    root: str
    nodes: list[GraphNode]
    edges: list[GraphEdge]
    truncated: bool
