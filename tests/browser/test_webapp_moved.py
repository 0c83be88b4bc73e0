"""The web app when an admin moves a screening to another room: every watcher is sent the new
room's map (``seat_snapshot``), and the page replaces its map with it: the new rows and seats,
no selection or hold of seats that no longer exist, a notice that says so, and seats of the new
room that can be held. Also when the snapshot arrives while the first availability read (of the
old room) is still on its way: that older read does not win."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import asyncpg
import httpx
import pytest
from playwright.async_api import Route, WebSocket, expect

from tests import factories as make
from tests.browser.conftest import AppPage, Opener, Screening, until
from tests.support import Account, LiveServer, make_account

pytestmark = pytest.mark.asyncio(loop_scope="session")

AVAILABILITY = re.compile(r"/seat-reservations/screening/\d+/availability$")
NEW_ROWS = {"D": 5, "E": 6}  # the new room: two rows of other lengths, other labels
MOVED = "This screening moved to another room: your hold has ended. Please choose seats again."


async def new_room(server: LiveServer, screening: Screening) -> int:
    """Another room of the screening's cinema (rows D and E), the screening not moved yet."""
    db = await asyncpg.connect(server.settings.database_url)
    try:
        cinema_id = await db.fetchval(
            "SELECT r.cinema_id FROM screenings s JOIN rooms r ON r.id = s.room_id WHERE s.id = $1",
            screening.id,
        )
        room_id = await make.room(db, cinema_id, "Hall 2")
        for row, count in NEW_ROWS.items():
            await make.seats(db, room_id, count, row=row)
        return room_id
    finally:
        await db.close()


async def an_admin(server: LiveServer) -> Account:
    async with httpx.AsyncClient(base_url=server.url) as client:
        return await make_account(
            client, "boss@example.com", "Boss", admin_db=server.settings.database_url
        )


async def move(server: LiveServer, admin: Account, screening_id: int, room_id: int) -> None:
    """Moves the screening to ``room_id`` through the API, as the admin."""
    async with httpx.AsyncClient(base_url=server.url, headers=admin.headers) as client:
        current = (await client.get(f"/api/v1/screenings/{screening_id}")).json()
        body = {k: current[k] for k in ("movie_id", "starts_at", "price")}
        r = await client.put(
            f"/api/v1/screenings/{screening_id}", json={**body, "room_id": room_id}
        )
        assert r.status_code == 200, r.text


def console_errors(tab: AppPage) -> list[str]:
    """The console's errors of the tab from now on (a failed request is one too)."""
    errors: list[str] = []
    tab.page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return errors


async def shows_the_new_room(tab: AppPage) -> None:
    grid = tab.page.locator(".grid")
    await expect(grid.locator(".row-label")).to_have_text(list(NEW_ROWS))
    await expect(grid.locator(".seat")).to_have_count(sum(NEW_ROWS.values()))
    for row, count in NEW_ROWS.items():
        await expect(tab.seat(row, count)).to_have_attribute("data-state", "available")
    await expect(tab.seat("A", 1)).to_have_count(0)
    # The grid's roving tabindex: exactly one seat in the tab order, the first one.
    await expect(grid.locator('.seat[tabindex="0"]')).to_have_count(1)
    await expect(tab.seat("D", 1)).to_have_attribute("tabindex", "0")


async def test_a_move_to_another_room_replaces_the_map_the_hold_and_the_selection(
    server: LiveServer,
    screening: Screening,
    people: tuple[Account, Account],
    open_app: Opener,
) -> None:
    room_id, boss = await new_room(server, screening), await an_admin(server)
    ann = await open_app(server)
    ann_errors = console_errors(ann)
    await ann.open_map(people[0].email, screening.id)
    await ann.hold(("A", 3))
    await ann.select("B", 2)
    await expect(ann.page.locator(".hold")).to_be_visible()
    await ann.seat("B", 2).focus()
    # An admin watches the same screening: its map and counts follow the move too.
    admin = await open_app(server)
    admin_errors = console_errors(admin)
    await admin.sign_in(boss.email, f"#/admin/screenings/{screening.id}")
    await expect(admin.page.locator("#count-held")).to_have_text("1")

    await move(server, boss, screening.id, room_id)

    await shows_the_new_room(ann)
    await expect(ann.page.get_by_role("alert")).to_have_text(MOVED)
    await expect(ann.page.locator(".meta")).to_contain_text("Rex, Hall 2")  # read again
    await expect(ann.page.locator(".hold")).to_be_hidden()
    await expect(ann.page.locator("#selection")).to_have_text(re.compile("^Select seats"))
    await expect(ann.page.get_by_role("button", name="Hold selected seats")).to_be_disabled()
    # The seat that had focus is gone: focus is on the map's tab stop, not lost to the page.
    await expect(ann.seat("D", 1)).to_be_focused()
    await ann.page.keyboard.press("ArrowDown")
    await expect(ann.seat("E", 1)).to_be_focused()

    await shows_the_new_room(admin)
    await expect(admin.page.locator(".meta")).to_contain_text("Rex, Hall 2")
    counts = admin.page.locator(".counts")
    await expect(counts.locator("#count-free")).to_have_text("11")
    await expect(counts.locator("#count-held")).to_have_text("0")

    await ann.hold(("E", 6), ("D", 2))
    await expect(ann.page.locator(".hold")).to_be_visible()
    await expect(admin.seat("E", 6)).to_have_attribute("data-state", "held")
    await expect(counts.locator("#count-held")).to_have_text("2")
    assert ann_errors == [] and admin_errors == []


async def test_a_move_without_a_hold_says_only_that_the_map_changed(
    server: LiveServer,
    screening: Screening,
    people: tuple[Account, Account],
    open_app: Opener,
) -> None:
    room_id, boss = await new_room(server, screening), await an_admin(server)
    ben = await open_app(server)
    errors = console_errors(ben)
    await ben.open_map(people[1].email, screening.id)
    await move(server, boss, screening.id, room_id)
    await shows_the_new_room(ben)
    notice = ben.page.get_by_role("alert")
    await expect(notice).to_contain_text("another room")
    await expect(notice).not_to_contain_text("hold")
    await ben.hold(("D", 3))
    assert errors == []


async def test_a_snapshot_that_overtakes_the_first_read_is_kept(
    server: LiveServer,
    screening: Screening,
    people: tuple[Account, Account],
    open_app: Opener,
) -> None:
    """The first availability read is answered with the old room's map, but only after the
    move's snapshot has reached the page: the page shows the new room."""
    room_id, boss = await new_room(server, screening), await an_admin(server)
    ann = await open_app(server)
    errors = console_errors(ann)
    snapshots: list[dict[str, Any]] = []
    old_map_read = asyncio.Event()
    snapshot_seen = asyncio.Event()

    def frame(payload: str | bytes) -> None:
        message = json.loads(payload)
        if message["type"] == "seat_snapshot":
            snapshots.append(message)
            snapshot_seen.set()

    def socket(ws: WebSocket) -> None:
        ws.on("framereceived", frame)

    async def late(route: Route) -> None:
        answer = await route.fetch()  # read now, before the move: the old room's map
        old_map_read.set()
        await snapshot_seen.wait()
        await route.fulfill(response=answer)

    await ann.page.route(AVAILABILITY, late)
    ann.page.on("websocket", socket)
    await ann.sign_in(people[0].email, f"#/screenings/{screening.id}")
    await old_map_read.wait()
    await move(server, boss, screening.id, room_id)
    await until(lambda: bool(snapshots))

    await expect(ann.page.locator(".link")).to_have_text("Live")
    await shows_the_new_room(ann)
    await ann.hold(("D", 4))
    assert errors == []
