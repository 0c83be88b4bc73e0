from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import pytest

from tests import factories as make
from tests.support import Account, make_account

MOVIES = "/api/v1/movies"


async def post_review(
    client: httpx.AsyncClient, who: Account, movie_id: int, **body: Any
) -> httpx.Response:
    payload = {"rating": 4, "content": "Tense and beautiful."} | body
    return await client.post(f"{MOVIES}/{movie_id}/reviews", json=payload, headers=who.headers)


async def react(
    client: httpx.AsyncClient, who: Account, review_id: int, reaction: str
) -> httpx.Response:
    return await client.post(
        f"{MOVIES}/reviews/{review_id}/react", json={"reaction": reaction}, headers=who.headers
    )


async def test_create_review(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    movie = await make.movie(db)
    r = await post_review(client, user, movie, title="  Great  ", rating=5)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["movie_id"] == movie
    assert body["user_id"] == user.id
    assert body["author_name"] == "Alice Example"
    assert (body["rating"], body["title"], body["likes"], body["dislikes"]) == (5, "Great", 0, 0)
    again = await client.get(f"{MOVIES}/reviews/{body['id']}")
    assert again.status_code == 200
    assert again.json() == body


async def test_one_review_per_user_per_movie(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account, other_user: Account
) -> None:
    movie = await make.movie(db)
    assert (await post_review(client, user, movie)).status_code == 201
    r = await post_review(client, user, movie, rating=1)
    assert r.status_code == 409
    assert r.json() == {"detail": "You have already reviewed this movie"}
    assert (await post_review(client, other_user, movie)).status_code == 201
    assert (await post_review(client, user, await make.movie(db, "Ran"))).status_code == 201


async def test_create_review_auth_and_unknown_movie(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    movie = await make.movie(db)
    r = await client.post(f"{MOVIES}/{movie}/reviews", json={"rating": 3, "content": "ok"})
    assert r.status_code == 401
    r = await post_review(client, user, movie + 1000)
    assert r.status_code == 404
    assert r.json() == {"detail": "Movie not found"}


@pytest.mark.parametrize(
    "body",
    [
        {"rating": 0, "content": "x"},
        {"rating": 6, "content": "x"},
        {"rating": "five", "content": "x"},  # "5" is taken, as FastAPI coerces it
        {"rating": 4.5, "content": "x"},
        {"rating": 3},
        {"rating": 3, "content": ""},
        {"rating": 3, "content": "   "},
        {"rating": 3, "content": "x" * 5001},
        {"rating": 3, "content": "x", "title": "t" * 201},
        {"rating": 3, "content": "nul \u0000 byte"},
        {"rating": 3, "content": "x", "stars": 3},
    ],
)
async def test_create_review_rejects_bad_input(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account, body: dict[str, Any]
) -> None:
    movie = await make.movie(db)
    r = await client.post(f"{MOVIES}/{movie}/reviews", json=body, headers=user.headers)
    assert r.status_code == 422, r.text
    assert await db.fetchval("SELECT count(*) FROM reviews") == 0


async def make_reviewers(client: httpx.AsyncClient, count: int) -> list[Account]:
    return [
        await make_account(client, f"reviewer{i}@example.com", f"Reviewer {i}")
        for i in range(count)
    ]


async def test_list_sorting_and_pagination(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    movie = await make.movie(db)
    people = await make_reviewers(client, 3)
    ids = []
    for person, rating in zip(people, (3, 5, 1), strict=True):
        ids.append((await post_review(client, person, movie, rating=rating)).json()["id"])
    await react(client, user, ids[2], "like")
    await react(client, people[0], ids[2], "like")
    await react(client, user, ids[1], "dislike")

    async def listing(query: str) -> list[Any]:
        r = await client.get(f"{MOVIES}/{movie}/reviews?{query}")
        assert r.status_code == 200, r.text
        return [item["id"] for item in r.json()]

    assert await listing("") == ids[::-1]
    assert await listing("order=asc") == ids
    assert await listing("sort_by=rating") == [ids[1], ids[0], ids[2]]
    assert await listing("sort_by=rating&order=asc") == [ids[2], ids[0], ids[1]]
    assert await listing("sort_by=helpful") == [ids[2], ids[0], ids[1]]
    assert await listing("skip=1&limit=1") == [ids[1]]
    assert await listing("skip=3") == []
    first = (await client.get(f"{MOVIES}/{movie}/reviews?sort_by=helpful")).json()[0]
    assert (first["likes"], first["dislikes"], first["author_name"]) == (2, 0, "Reviewer 2")


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=201", "skip=-1", "sort_by=stars", "order=up", "limit=x"]
)
async def test_list_rejects_bad_query(
    client: httpx.AsyncClient, db: asyncpg.Connection, query: str
) -> None:
    movie = await make.movie(db)
    r = await client.get(f"{MOVIES}/{movie}/reviews?{query}")
    assert r.status_code == 422, r.text


async def test_list_and_summary_of_unknown_movie(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"{MOVIES}/999999/reviews")).status_code == 404
    assert (await client.get(f"{MOVIES}/999999/reviews/summary")).status_code == 404
    assert (await client.get(f"{MOVIES}/reviews/999999")).status_code == 404


async def test_summary(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    movie = await make.movie(db)
    r = await client.get(f"{MOVIES}/{movie}/reviews/summary")
    assert r.status_code == 200
    zero = {"1": 0, "2": 0, "3": 0, "4": 0, "5": 0}
    assert r.json() == {"movie_id": movie, "count": 0, "average": None, "distribution": zero}
    for person, rating in zip(await make_reviewers(client, 3), (5, 5, 2), strict=True):
        await post_review(client, person, movie, rating=rating)
    body = (await client.get(f"{MOVIES}/{movie}/reviews/summary")).json()
    assert body["count"] == 3
    assert body["average"] == 4.0
    assert body["distribution"] == zero | {"5": 2, "2": 1}


async def test_update_own_review_only(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    user: Account,
    other_user: Account,
    admin: Account,
) -> None:
    movie = await make.movie(db)
    review = (await post_review(client, user, movie, title="Hm")).json()
    url = f"{MOVIES}/reviews/{review['id']}"
    r = await client.put(url, json={"rating": 2, "title": None}, headers=user.headers)
    assert r.status_code == 200, r.text
    assert (r.json()["rating"], r.json()["title"], r.json()["content"]) == (
        2,
        None,
        review["content"],
    )
    for who in (other_user, admin):
        r = await client.put(url, json={"rating": 5}, headers=who.headers)
        assert r.status_code == 404
        assert r.json() == {"detail": "Review not found"}
    assert (await client.put(url, json={"rating": 5})).status_code == 401
    for bad in ({"rating": 9}, {"content": " "}, {"likes": 100}):
        assert (await client.put(url, json=bad, headers=user.headers)).status_code == 422
    assert (await client.get(url)).json()["rating"] == 2


async def test_delete_own_or_as_admin(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    user: Account,
    other_user: Account,
    admin: Account,
) -> None:
    movie = await make.movie(db)
    mine = (await post_review(client, user, movie)).json()["id"]
    theirs = (await post_review(client, other_user, movie)).json()["id"]
    r = await client.delete(f"{MOVIES}/reviews/{theirs}", headers=user.headers)
    assert r.status_code == 404
    assert (await client.delete(f"{MOVIES}/reviews/{mine}")).status_code == 401
    r = await client.delete(f"{MOVIES}/reviews/{mine}", headers=user.headers)
    assert r.status_code == 204
    assert (await client.get(f"{MOVIES}/reviews/{mine}")).status_code == 404
    r = await client.delete(f"{MOVIES}/reviews/{theirs}", headers=admin.headers)
    assert r.status_code == 204
    assert await db.fetchval("SELECT count(*) FROM reviews") == 0
    # Deleting the review freed the slot: the user may review the movie again.
    assert (await post_review(client, user, movie)).status_code == 201


async def test_reactions(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    user: Account,
    other_user: Account,
) -> None:
    movie = await make.movie(db)
    review = (await post_review(client, other_user, movie)).json()["id"]
    r = await react(client, user, review, "like")
    assert r.status_code == 200, r.text
    assert r.json() == {"review_id": review, "likes": 1, "dislikes": 0, "my_reaction": "like"}
    assert (await react(client, user, review, "like")).json()["likes"] == 1
    r = await react(client, user, review, "dislike")
    assert r.json() == {"review_id": review, "likes": 0, "dislikes": 1, "my_reaction": "dislike"}
    r = await react(client, other_user, review, "like")
    assert r.json() == {"review_id": review, "likes": 1, "dislikes": 1, "my_reaction": "like"}
    r = await react(client, user, review, "none")
    assert r.json() == {"review_id": review, "likes": 1, "dislikes": 0, "my_reaction": None}
    got = (await client.get(f"{MOVIES}/reviews/{review}")).json()
    assert (got["likes"], got["dislikes"], got["my_reaction"]) == (1, 0, None)
    assert await db.fetchval("SELECT count(*) FROM review_reactions") == 1


async def test_signed_in_readers_see_their_own_reaction(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account, other_user: Account
) -> None:
    movie = await make.movie(db)
    review = (await post_review(client, other_user, movie)).json()["id"]
    await react(client, user, review, "dislike")
    await react(client, other_user, review, "like")
    for who, mine in ((user, "dislike"), (other_user, "like")):
        one = await client.get(f"{MOVIES}/reviews/{review}", headers=who.headers)
        listed = await client.get(f"{MOVIES}/{movie}/reviews", headers=who.headers)
        assert one.json()["my_reaction"] == listed.json()[0]["my_reaction"] == mine
    assert (await client.get(f"{MOVIES}/{movie}/reviews")).json()[0]["my_reaction"] is None
    bad = {"Authorization": "Bearer nonsense"}
    assert (await client.get(f"{MOVIES}/{movie}/reviews", headers=bad)).status_code == 401


async def test_reaction_errors(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    review = (await post_review(client, user, await make.movie(db))).json()["id"]
    assert (await react(client, user, review + 1000, "like")).status_code == 404
    assert (await react(client, user, review + 1000, "none")).status_code == 404
    assert (await react(client, user, review, "love")).status_code == 422
    r = await client.post(f"{MOVIES}/reviews/{review}/react", json={"reaction": "like"})
    assert r.status_code == 401
    assert await db.fetchval("SELECT count(*) FROM review_reactions") == 0


async def test_reviews_of_a_deleted_account_stay_anonymous(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    movie = await make.movie(db)
    review = (await post_review(client, user, movie)).json()["id"]
    assert (await client.delete("/api/v1/users/me", headers=user.headers)).status_code == 204
    got = (await client.get(f"{MOVIES}/reviews/{review}")).json()
    assert got["author_name"] == "Deleted user"
    assert (await client.get(f"{MOVIES}/{movie}/reviews/summary")).json()["count"] == 1


async def test_racing_duplicate_reviews_yield_one(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    movie = await make.movie(db)
    results = await asyncio.gather(*(post_review(client, user, movie) for _ in range(8)))
    assert sorted(r.status_code for r in results) == [201] + [409] * 7
    assert await db.fetchval("SELECT count(*) FROM reviews") == 1


async def test_ties_break_on_id_so_pages_never_overlap(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    movie = await make.movie(db)
    ids = [
        (await post_review(client, person, movie, rating=3)).json()["id"]
        for person in await make_reviewers(client, 5)
    ]
    await db.execute("UPDATE reviews SET created_at = '2026-01-01T00:00:00Z'")
    for sort_by in ("created_at", "rating", "helpful"):
        for order, expected in (("desc", ids[::-1]), ("asc", ids)):
            pages = []
            for skip in range(0, 5, 2):
                r = await client.get(
                    f"{MOVIES}/{movie}/reviews",
                    params={"sort_by": sort_by, "order": order, "skip": skip, "limit": 2},
                )
                pages += [item["id"] for item in r.json()]
            assert pages == expected, (sort_by, order)
