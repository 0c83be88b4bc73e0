"""The guide's "Reviews" group: one review per user per movie, its summary, likes and dislikes."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec

from api.answercache import catalog_changed
from api.caching import CATALOG
from api.reads import catalog_read
from api.routing import Call, Router
from api.schemas import Page
from db import reviews
from seatlock.errors import NotFound, ValidationFailed

router = Router("Reviews")

Rating = Annotated[int, msgspec.Meta(ge=1, le=5)]
Title = Annotated[str, msgspec.Meta(max_length=200)]
Content = Annotated[str, msgspec.Meta(min_length=1, max_length=5000)]


class ReviewIn(msgspec.Struct, forbid_unknown_fields=True):
    rating: Rating
    content: Content
    title: Title | None = None


class ReviewUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """Absent fields stay as they are; ``title: null`` clears the title."""

    rating: Rating | msgspec.UnsetType = msgspec.UNSET
    content: Content | msgspec.UnsetType = msgspec.UNSET
    title: Title | msgspec.UnsetType | None = msgspec.UNSET


class ReactionIn(msgspec.Struct, forbid_unknown_fields=True):
    """``none`` removes the caller's reaction."""

    reaction: Literal["like", "dislike", "none"]


class ReviewsQuery(Page, forbid_unknown_fields=True):
    sort_by: Literal["created_at", "rating", "helpful"] = "created_at"
    order: Literal["asc", "desc"] = "desc"


class ReviewOut(msgspec.Struct):
    id: int
    movie_id: int
    user_id: int
    author_name: str
    rating: int
    title: str | None
    content: str
    likes: int
    dislikes: int
    created_at: datetime
    updated_at: datetime
    my_reaction: str | None = None  # the caller's own reaction, when a token was sent


class ReviewSummary(msgspec.Struct):
    movie_id: int
    count: int
    average: Decimal | None
    distribution: dict[str, int]


class ReactionOut(msgspec.Struct):
    review_id: int
    likes: int
    dislikes: int
    my_reaction: str | None


def review_out(row: Any) -> ReviewOut:
    return ReviewOut(**{f: row[f] for f in ReviewOut.__struct_fields__})


def _text(value: str, field: str) -> str:
    text = value.strip()
    if not text:
        raise ValidationFailed(f"{field} must not be blank")
    if "\x00" in text:
        raise ValidationFailed(f"{field} must not contain NUL characters")
    return text


def _title(value: str | None) -> str | None:
    return _text(value, "title") if value and value.strip() else None


def _viewer(call: Call) -> int | None:
    return call.principal.user_id if call.principal else None


async def _found(call: Call, review_id: int) -> ReviewOut:
    # Right after the caller wrote it (create, update): catalog_read keeps them on the primary.
    row = await catalog_read(call, reviews.get_review, review_id, _viewer(call))
    if row is None:
        raise NotFound("Review not found")
    return review_out(row)


@router.post(
    "/api/v1/movies/{movie_id:int}/reviews",
    errors=(409,),
    access="user",
    body=ReviewIn,
    status=201,
    response=ReviewOut,
)
async def create_review(call: Call) -> ReviewOut:
    """Create Review.

    One per user per movie.
    """
    body: ReviewIn = call.body
    content, title = _text(body.content, "content"), _title(body.title)
    review_id = await reviews.create_review(
        call.services.db, call.params["movie_id"], call.user.user_id, body.rating, title, content
    )
    catalog_changed(call.scope)
    return await _found(call, review_id)


@router.get(
    "/api/v1/movies/{movie_id:int}/reviews",
    access="optional",
    query=ReviewsQuery,
    response=list[ReviewOut],
    cache=CATALOG,
)
async def list_reviews(call: Call) -> list[ReviewOut]:
    """Get Movie Reviews."""
    q: ReviewsQuery = call.query
    movie_id = call.params["movie_id"]
    if not await catalog_read(call, reviews.movie_exists, movie_id):
        raise NotFound("Movie not found")
    rows = await catalog_read(
        call,
        reviews.list_reviews,
        movie_id,
        _viewer(call),
        skip=q.skip,
        limit=q.limit,
        sort_by=q.sort_by,
        order=q.order,
    )
    return [review_out(r) for r in rows]


@router.get("/api/v1/movies/{movie_id:int}/reviews/summary", response=ReviewSummary, cache=CATALOG)
async def reviews_summary(call: Call) -> ReviewSummary:
    """Get Movie Reviews Summary.

    Count, average rating and how many of each star.
    """
    movie_id = call.params["movie_id"]
    row = await catalog_read(call, reviews.summary, movie_id)
    if row is None:
        raise NotFound("Movie not found")
    distribution = {str(star): row[f"r{star}"] for star in range(1, 6)}
    return ReviewSummary(movie_id, row["count"], row["average"], distribution)


@router.get(
    "/api/v1/movies/reviews/{review_id:int}", access="optional", response=ReviewOut, cache=CATALOG
)
async def get_review(call: Call) -> ReviewOut:
    """Get Review."""
    return await _found(call, call.params["review_id"])


@router.put(
    "/api/v1/movies/reviews/{review_id:int}", access="user", body=ReviewUpdate, response=ReviewOut
)
async def update_review(call: Call) -> ReviewOut:
    """Update Review.

    Own reviews only; another user's review answers 404, even for admins.
    """
    body: ReviewUpdate = call.body
    changes: dict[str, Any] = {}
    if body.rating is not msgspec.UNSET:
        changes["rating"] = body.rating
    if body.content is not msgspec.UNSET:
        changes["content"] = _text(body.content, "content")
    if body.title is not msgspec.UNSET:
        changes["title"] = _title(body.title)
    review_id = call.params["review_id"]
    if not await reviews.update_review(call.services.db, review_id, call.user.user_id, changes):
        raise NotFound("Review not found")
    catalog_changed(call.scope)
    return await _found(call, review_id)


@router.delete("/api/v1/movies/reviews/{review_id:int}", access="user", status=204)
async def delete_review(call: Call) -> None:
    """Delete Review.

    Own reviews; admins may delete any.
    """
    user = call.user
    deleted = await reviews.delete_review(
        call.services.db, call.params["review_id"], user.user_id, user.is_admin
    )
    if not deleted:
        raise NotFound("Review not found")
    catalog_changed(call.scope)


@router.post(
    "/api/v1/movies/reviews/{review_id:int}/react",
    access="user",
    body=ReactionIn,
    response=ReactionOut,
)
async def react(call: Call) -> ReactionOut:
    """React To Review.

    Like or dislike (one per user, changeable); ``none`` removes it.
    """
    review_id, user_id = call.params["review_id"], call.user.user_id
    await reviews.set_reaction(call.services.db, review_id, user_id, call.body.reaction)
    catalog_changed(call.scope)
    row = await reviews.reaction_counts(call.services.db, review_id, user_id)
    return ReactionOut(review_id, row["likes"], row["dislikes"], row["mine"])
