from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from seatlock import keys
from tests import factories as make
from tests.support import PASSWORD, Account, make_account

ME = "/api/v1/users/me"
HISTORY = "/api/v1/users/me/search-history"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
IMAGES = {
    "png": (PNG, "image/png"),
    "jpg": (b"\xff\xd8\xff\xe0" + b"\x00" * 64, "image/jpeg"),
    "gif": (b"GIF89a" + b"\x00" * 64, "image/gif"),
    "webp": (b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 64, "image/webp"),
}


async def upload(client: httpx.AsyncClient, who: Account, data: bytes) -> httpx.Response:
    files = {"file": ("picture.bin", data, "application/octet-stream")}
    return await client.put(f"{ME}/profile-picture", files=files, headers=who.headers)


# Profile -------------------------------------------------------------------------------------


async def test_get_and_update_me(client: httpx.AsyncClient, user: Account) -> None:
    assert (await client.get(ME)).status_code == 401
    r = await client.get(ME, headers=user.headers)
    assert r.status_code == 200
    assert (r.json()["id"], r.json()["email"]) == (user.id, user.email)
    body = {"full_name": " Alice B ", "phone": "+33 1 23 45 67 89", "bio": "Films."}
    r = await client.put(ME, json=body, headers=user.headers)
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["full_name"], got["phone"], got["bio"]) == ("Alice B", body["phone"], "Films.")
    got = (await client.put(ME, json={"phone": None}, headers=user.headers)).json()
    assert (got["full_name"], got["phone"], got["bio"]) == ("Alice B", None, "Films.")
    assert (await client.put(ME, json={"bio": "x"})).status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"full_name": ""},
        {"full_name": "   "},
        {"full_name": "n" * 201},
        {"full_name": None},
        {"phone": "call me"},
        {"phone": "1" * 40},
        {"bio": "b" * 1001},
        {"bio": "nul \u0000"},
        {"email": "new@example.com"},
        {"bio": "ok", "role": "admin"},
    ],
)
async def test_update_me_rejects_bad_input(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account, body: dict[str, Any]
) -> None:
    r = await client.put(ME, json=body, headers=user.headers)
    assert r.status_code == 422, r.text
    row = await db.fetchrow("SELECT full_name, bio, role, email FROM users WHERE id = $1", user.id)
    assert row is not None
    assert tuple(row) == ("Alice Example", None, "user", user.email)


async def test_preferences(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    cinema = await make.cinema(db)
    prefs = {
        "genres": ["drama", "noir"],
        "languages": ["fr"],
        "preferred_cinema_ids": [cinema, cinema],
        "seat_type": "vip",
        "notifications": False,
    }
    r = await client.put(f"{ME}/preferences", json=prefs, headers=user.headers)
    assert r.status_code == 200, r.text
    assert r.json()["preferences"] == prefs | {"preferred_cinema_ids": [cinema]}
    r = await client.put(f"{ME}/preferences", json={"genres": ["comedy"]}, headers=user.headers)
    assert r.json()["preferences"] == {"genres": ["comedy"]}
    assert (await client.get(ME, headers=user.headers)).json()["preferences"] == {
        "genres": ["comedy"]
    }


@pytest.mark.parametrize(
    "body",
    [
        {"favourite_colour": "red"},
        {"genres": "drama"},
        {"genres": [""]},
        {"genres": ["nul \u0000"]},
        {"languages": ["new\nline"]},
        {"genres": ["g"] * 51},
        {"preferred_cinema_ids": [0]},
        {"preferred_cinema_ids": [999999]},
        {"preferred_cinema_ids": ["x"]},
        {"seat_type": "hammock"},
        {"notifications": "sometimes"},
        [],
    ],
)
async def test_preferences_reject_bad_input(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account, body: Any
) -> None:
    r = await client.put(f"{ME}/preferences", json=body, headers=user.headers)
    assert r.status_code == 422, r.text
    assert await db.fetchval("SELECT preferences FROM users WHERE id = $1", user.id) == "{}"


async def test_preferences_need_a_token(client: httpx.AsyncClient) -> None:
    assert (await client.put(f"{ME}/preferences", json={})).status_code == 401


async def test_picture_url(client: httpx.AsyncClient, user: Account) -> None:
    url = "https://cdn.example.com/me.png"
    r = await client.put(f"{ME}/profile-picture-url", json={"url": url}, headers=user.headers)
    assert r.status_code == 200, r.text
    assert r.json()["profile_picture_url"] == url
    bad_urls = (
        "ftp://x.org/a.png",
        "javascript:alert(1)",
        "/relative.png",
        "https://",
        "http://[::1",
    )
    for bad in (*bad_urls, "", "https://x.org/\u0000"):
        r = await client.put(f"{ME}/profile-picture-url", json={"url": bad}, headers=user.headers)
        assert r.status_code == 422, bad
    assert (await client.put(f"{ME}/profile-picture-url", json={"url": url})).status_code == 401
    assert (await client.get(ME, headers=user.headers)).json()["profile_picture_url"] == url


@pytest.mark.parametrize("kind", sorted(IMAGES))
async def test_upload_picture_is_served_back(
    client: httpx.AsyncClient, user: Account, kind: str
) -> None:
    data, media = IMAGES[kind]
    r = await upload(client, user, data)
    assert r.status_code == 200, r.text
    url = r.json()["profile_picture_url"]
    path = httpx.URL(url).path
    assert path.startswith("/media/profile-pictures/") and path.endswith(f".{kind}")
    served = await client.get(path)
    assert served.status_code == 200
    assert served.content == data
    assert served.headers["content-type"] == media
    assert served.headers["x-content-type-options"] == "nosniff"


async def test_new_picture_replaces_the_old_file(client: httpx.AsyncClient, user: Account) -> None:
    first = httpx.URL((await upload(client, user, PNG)).json()["profile_picture_url"]).path
    second = httpx.URL((await upload(client, user, PNG)).json()["profile_picture_url"]).path
    assert first != second
    assert (await client.get(first)).status_code == 404
    assert (await client.get(second)).status_code == 200


async def test_racing_uploads_leave_exactly_the_current_file(
    client: httpx.AsyncClient, server: Any, user: Account
) -> None:
    folder = server.settings.media_dir / "profile-pictures"
    before = set(folder.iterdir()) if folder.exists() else set()
    results = await asyncio.gather(*(upload(client, user, PNG) for _ in range(6)))
    assert {r.status_code for r in results} == {200}
    current = (await client.get(ME, headers=user.headers)).json()["profile_picture_url"]
    left = {p.name for p in set(folder.iterdir()) - before}
    assert left == {current.rsplit("/", 1)[-1]}


async def test_upload_rejects_other_types_and_big_files(
    client: httpx.AsyncClient, server: Any, user: Account
) -> None:
    r = await upload(client, user, b"<svg xmlns='http://www.w3.org/2000/svg'/>")
    assert r.status_code == 415
    limit = server.settings.max_upload_bytes
    assert (await upload(client, user, PNG + b"\x00" * (limit - len(PNG) + 1))).status_code == 413
    assert (await upload(client, user, PNG + b"\x00" * (limit + 20000))).status_code == 413
    assert (await upload(client, user, PNG + b"\x00" * (limit - len(PNG)))).status_code == 200


async def test_upload_bad_requests(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    url = f"{ME}/profile-picture"
    r = await client.put(url, files={"picture": ("a.png", PNG)}, headers=user.headers)
    assert r.status_code == 422
    files = {"other": ("a.png", PNG)}
    r = await client.put(url, data={"file": "not a file"}, files=files, headers=user.headers)
    assert r.status_code == 422
    r = await client.put(url, data={"file": "not a file"}, headers=user.headers)
    assert r.status_code == 415
    r = await client.put(url, content=PNG, headers=user.headers | {"content-type": "image/png"})
    assert r.status_code == 415
    assert (await client.put(url, files={"file": ("a.png", PNG)})).status_code == 401
    assert await db.fetchval("SELECT profile_picture_url FROM users WHERE id = $1", user.id) is None


async def test_media_route_refuses_odd_names(client: httpx.AsyncClient) -> None:
    for name in ("..%2F..%2Fetc%2Fpasswd", "nope.png", "x" * 20 + ".svg"):
        assert (await client.get(f"/media/profile-pictures/{name}")).status_code == 404


async def test_public_profile(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account, other_user: Account
) -> None:
    movie = await make.movie(db)
    r = await client.post(
        f"/api/v1/movies/{movie}/reviews",
        json={"rating": 5, "content": "Yes."},
        headers=user.headers,
    )
    assert r.status_code == 201
    await client.put(ME, json={"phone": "+1 555 0100"}, headers=user.headers)
    r = await client.get(f"/api/v1/users/{user.id}")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"id", "full_name", "profile_picture_url", "created_at", "review_count"}
    assert (body["id"], body["full_name"], body["review_count"]) == (user.id, "Alice Example", 1)
    assert (await client.get(f"/api/v1/users/{other_user.id}")).json()["review_count"] == 0
    assert (await client.get("/api/v1/users/999999999")).status_code == 404
    assert (await client.get(f"/api/v1/users/{2**64}")).status_code == 404


async def test_delete_account_anonymises_and_keeps_sales(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    redis: Redis,
    user: Account,
    admin: Account,
) -> None:
    second = await client.post(
        "/api/v1/auth/login", json={"email": user.email, "password": PASSWORD}
    )
    other_token = {"Authorization": f"Bearer {second.json()['access_token']}"}
    show = await make.show(db, 1, movie_id=await make.movie(db))
    screening, seats = show.id, show.seat_ids
    ticket = await make.ticket(db, user.id, screening, seats[0], price="15.00")
    await client.put(ME, json={"phone": "+1 555 0100", "bio": "me"}, headers=user.headers)
    picture = httpx.URL((await upload(client, user, PNG)).json()["profile_picture_url"]).path
    await client.post(HISTORY, json={"query": "heat"}, headers=user.headers)
    before = (await client.get("/api/v1/admin/stats/revenue", headers=admin.headers)).json()

    assert (await client.delete(ME)).status_code == 401
    r = await client.delete(ME, headers=user.headers)
    assert r.status_code == 204

    for headers in (user.headers, other_token):
        assert (await client.get(ME, headers=headers)).status_code == 401
    row = await db.fetchrow("SELECT * FROM users WHERE id = $1", user.id)
    assert row is not None
    assert row["email"] == f"deleted-{user.id}@invalid"
    assert row["full_name"] == "Deleted user"
    assert (row["phone"], row["bio"], row["profile_picture_url"]) == (None, None, None)
    assert row["deleted_at"] is not None and row["is_active"] is False
    live = "SELECT count(*) FROM auth_sessions WHERE user_id = $1 AND revoked_at IS NULL"
    assert await db.fetchval(live, user.id) == 0
    sessions = await db.fetch("SELECT id FROM auth_sessions WHERE user_id = $1", user.id)
    assert [await redis.get(keys.session(s["id"])) for s in sessions] == [b"0", b"0"]
    assert await db.fetchval("SELECT count(*) FROM search_history") == 0
    assert await db.fetchval("SELECT user_id FROM tickets WHERE id = $1", ticket) == user.id
    after = (await client.get("/api/v1/admin/stats/revenue", headers=admin.headers)).json()
    assert after == before == {"total_revenue": 15.0, "confirmed_tickets": 1}
    assert (await client.get(picture)).status_code == 404
    assert (await client.get(f"/api/v1/users/{user.id}")).status_code == 404
    r = await client.post("/api/v1/auth/login", json={"email": user.email, "password": PASSWORD})
    assert r.status_code == 401
    # The address is free again.
    await make_account(client, user.email, "Alice Again")


# Search history ------------------------------------------------------------------------------


async def add(client: httpx.AsyncClient, who: Account, query: str) -> httpx.Response:
    return await client.post(HISTORY, json={"query": query}, headers=who.headers)


async def test_search_history_newest_first_and_paginated(
    client: httpx.AsyncClient, user: Account, other_user: Account
) -> None:
    ids = []
    for q in ("heat", " alien ", "ran"):
        r = await add(client, user, q)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    await add(client, other_user, "secret")
    r = await client.get(HISTORY, headers=user.headers)
    assert r.status_code == 200
    assert [(e["id"], e["query"]) for e in r.json()] == list(
        zip(ids[::-1], ["ran", "alien", "heat"], strict=True)
    )
    r = await client.get(f"{HISTORY}?skip=1&limit=1", headers=user.headers)
    assert [e["id"] for e in r.json()] == [ids[1]]
    for bad in ("limit=0", "limit=201", "skip=-1", "skip=x"):
        assert (await client.get(f"{HISTORY}?{bad}", headers=user.headers)).status_code == 422


async def test_search_history_rejects_bad_queries(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    for q in ("", "   ", "q" * 201, "a\u0000b"):
        assert (await add(client, user, q)).status_code == 422, q
    assert (await client.post(HISTORY, json={}, headers=user.headers)).status_code == 422
    assert (await client.post(HISTORY, json={"query": "x"})).status_code == 401
    assert (await client.get(HISTORY)).status_code == 401
    assert await db.fetchval("SELECT count(*) FROM search_history") == 0
    assert (await add(client, user, "q" * 200)).status_code == 201


async def test_search_history_delete_own_entries_only(
    client: httpx.AsyncClient, user: Account, other_user: Account
) -> None:
    mine = (await add(client, user, "heat")).json()["id"]
    keep = (await add(client, user, "ran")).json()["id"]
    theirs = (await add(client, other_user, "alien")).json()["id"]
    r = await client.delete(f"{HISTORY}/{theirs}", headers=user.headers)
    assert r.status_code == 404
    assert r.json() == {"detail": "Search entry not found"}
    assert (await client.delete(f"{HISTORY}/{mine}", headers=user.headers)).status_code == 204
    assert (await client.delete(f"{HISTORY}/{mine}", headers=user.headers)).status_code == 404
    listed = (await client.get(HISTORY, headers=user.headers)).json()
    assert [e["id"] for e in listed] == [keep]
    assert (await client.delete(HISTORY, headers=user.headers)).status_code == 204
    assert (await client.get(HISTORY, headers=user.headers)).json() == []
    assert len((await client.get(HISTORY, headers=other_user.headers)).json()) == 1
    assert (await client.delete(HISTORY)).status_code == 401


# Media ownership -------------------------------------------------------------------------------


async def test_pointing_at_another_users_picture_is_refused(
    client: httpx.AsyncClient, user: Account, other_user: Account
) -> None:
    theirs = (await upload(client, other_user, PNG)).json()["profile_picture_url"]
    for url in (theirs, theirs + "?v=2", theirs.replace("http://localhost", "HTTP://LocalHost")):
        r = await client.put(f"{ME}/profile-picture-url", json={"url": url}, headers=user.headers)
        assert r.status_code == 422, url
        assert r.json() == {"detail": "url must be an external URL or a picture you uploaded"}
    # The attack this stops: point at their file, then change away, deleting it.
    await upload(client, user, PNG)
    assert (await client.get(httpx.URL(theirs).path)).status_code == 200


def other_spellings(url: str) -> list[str]:
    """Other URLs of the stored file ``url`` names (http://localhost:8000/media/...): another
    name of the server, a dot segment, a percent-encoded letter, a host with a trailing dot."""
    path = httpx.URL(url).path
    origin = url.removesuffix(path)
    assert origin == "http://localhost:8000" and path.startswith("/media/profile-pictures/")
    rest = path.removeprefix("/media")
    return [
        "http://127.0.0.1:8000" + path,
        f"{origin}/media/x/..{rest}",
        f"{origin}/%6dedia{rest}",
        "http://localhost:8000." + path,
    ]


async def test_another_spelling_of_another_users_picture_is_refused(
    client: httpx.AsyncClient, user: Account, other_user: Account
) -> None:
    theirs = (await upload(client, other_user, PNG)).json()["profile_picture_url"]
    for url in other_spellings(theirs):
        r = await client.put(f"{ME}/profile-picture-url", json={"url": url}, headers=user.headers)
        assert r.status_code == 422, url
        assert r.json() == {"detail": "url must be an external URL or a picture you uploaded"}
    await upload(client, user, PNG)  # changing away deletes none of theirs
    assert (await client.get(httpx.URL(theirs).path)).status_code == 200


async def test_another_spelling_of_an_own_picture_is_accepted_and_still_owned(
    client: httpx.AsyncClient, user: Account
) -> None:
    mine = (await upload(client, user, PNG)).json()["profile_picture_url"]
    for url in other_spellings(mine):
        r = await client.put(f"{ME}/profile-picture-url", json={"url": url}, headers=user.headers)
        assert r.status_code == 200, url
        assert r.json()["profile_picture_url"] == url
    assert (await client.get(httpx.URL(mine).path)).status_code == 200
    url = "https://cdn.example.com/mine.png"
    r = await client.put(f"{ME}/profile-picture-url", json={"url": url}, headers=user.headers)
    assert r.status_code == 200
    assert (await client.get(httpx.URL(mine).path)).status_code == 404  # recognised as its own


async def test_a_change_deletes_only_the_changers_own_file(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account, other_user: Account
) -> None:
    theirs = (await upload(client, other_user, PNG)).json()["profile_picture_url"]
    # A row written before the setter checked owners (or by hand) points at their file.
    await db.execute("UPDATE users SET profile_picture_url = $2 WHERE id = $1", user.id, theirs)
    url = "https://cdn.example.com/mine.png"
    r = await client.put(f"{ME}/profile-picture-url", json={"url": url}, headers=user.headers)
    assert r.status_code == 200
    assert (await client.get(httpx.URL(theirs).path)).status_code == 200
    await db.execute("UPDATE users SET profile_picture_url = $2 WHERE id = $1", user.id, theirs)
    assert (await client.delete(ME, headers=user.headers)).status_code == 204
    assert (await client.get(httpx.URL(theirs).path)).status_code == 200


async def test_own_uploads_may_be_set_again_and_are_named_for_their_owner(
    client: httpx.AsyncClient, user: Account
) -> None:
    first = (await upload(client, user, PNG)).json()["profile_picture_url"]
    assert httpx.URL(first).path.rsplit("/", 1)[-1].startswith(f"{user.id}.")
    r = await client.put(f"{ME}/profile-picture-url", json={"url": first}, headers=user.headers)
    assert r.status_code == 200
    url = "https://cdn.example.com/mine.png"
    r = await client.put(f"{ME}/profile-picture-url", json={"url": url}, headers=user.headers)
    assert r.status_code == 200
    assert (await client.get(httpx.URL(first).path)).status_code == 404  # own file: deleted


async def test_files_without_an_owner_are_never_deleted_by_a_change(
    client: httpx.AsyncClient, db: asyncpg.Connection, server: Any, user: Account
) -> None:
    folder = server.settings.media_dir / "profile-pictures"
    folder.mkdir(parents=True, exist_ok=True)
    legacy = "LegacyNameWithoutOwner01.png"  # as stored before names carried their owner
    (folder / legacy).write_bytes(PNG)
    url = server.settings.public_url.rstrip("/") + "/media/profile-pictures/" + legacy
    await db.execute("UPDATE users SET profile_picture_url = $2 WHERE id = $1", user.id, url)
    await upload(client, user, PNG)
    assert (folder / legacy).exists()
    r = await client.put(f"{ME}/profile-picture-url", json={"url": url}, headers=user.headers)
    assert r.status_code == 422  # whose it is cannot be told: nobody may claim it
