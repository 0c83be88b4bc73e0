// One screening's live seat map: select seats, hold them, watch the hold's countdown, extend,
// book with a test payment, or release them. The map follows the server (live.js); the app
// never marks a seat held or booked before the server said so.

import { EXPIRED, request, serverNow } from "./api.js";
import { announce, fail, formatMoney, formatTime, h, notify } from "./dom.js";
import { LiveSeats } from "./live.js";
import { SeatMap, legend } from "./seatmap.js";

const EXTEND_MINUTES = 5;
const RECHECK_MS = 1500; // after our hold's deadline: re-read if no event has freed the seats
// A seat of ours the server frees this close to its hold's deadline (or after it) has expired:
// the server frees it on time, and the browser knows the server's clock to about a second.
const EXPIRY_SLACK_MS = 1500;
// The countdown is seen, not heard (a live region ticking every second would drown the page):
// this long before the hold ends a screen reader is told, with time to extend (WCAG 2.2.1).
const WARN_MS = 60000;

const name = (seat) => `Row ${seat.row}, seat ${seat.number}`;
const labels = (seats) => seats.map((seat) => `${seat.row}${seat.number}`).join(", ");
const was = (seats) => (seats.length === 1 ? "was" : "were");

// The seats a refusal names. The API names them by id only in its text ("Seats [7, 9] are
// currently reserved by other users"): the bracketed list is read, and only seats that were
// asked for count, so any other text names none and keeps the server's own words.
function namedSeats(error, asked, seats) {
  const list = /\[([\d,\s]+)\]/.exec(typeof error.detail === "string" ? error.detail : "");
  const ids = list ? list[1].split(",").map(Number) : [];
  // A seat asked for may be gone since (the screening moved to another room): not named.
  return ids.filter((seatId) => asked.includes(seatId)).map((seatId) => seats.get(seatId)).filter(Boolean);
}

function paymentId() {
  // A test payment id, as a payment provider would hand one back. It is kept until the booking
  // succeeds, so a retry after a lost answer books the same tickets (invariant 6), not new ones.
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return `test_${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

function clock(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

export function linkText(state, seconds) {
  if (state === "live") return "Live";
  if (state === "connecting") return "Connecting…";
  return `Connection lost: reconnecting in ${seconds} s…`;
}

// onMissing(): the screening does not exist (404).
export function screeningHeader(id, heading, onMissing) {
  const meta = h("p", { class: "meta" });
  request("GET", `/api/v1/screenings/${id}`).then((s) => {
    heading.textContent = s.movie_title;
    meta.textContent = `${formatTime(s.starts_at)} · ${s.cinema_name}, ${s.room_name} · ${formatMoney(s.price)} a seat`;
  }, (error) => (error.status === 404 ? onMissing() : fail(error)));
  return meta;
}

// The page of a screening that does not exist (a wrong or old address), with the way back. The
// caller has stopped its LiveSeats: no socket is left trying.
export function missingScreening(section, heading, back) {
  if (!section.isConnected) return; // left already
  heading.textContent = "Screening not found";
  section.replaceChildren(heading,
    h("p", {}, "This screening does not exist: it may have been removed, or the address is wrong."),
    h("p", {}, back));
  document.title = "Screening not found · seatlock";
  announce("Screening not found.");
}

export function linkBadge() {
  return h("p", { class: "link", "data-link": "connecting", "aria-live": "polite" }, "Connecting…");
}

export function screeningView(id, ctx) {
  const selected = new Set();
  const heading = h("h1", { id: "page-title" }, `Screening ${id}`);
  const badge = linkBadge();
  let payment = null; // {id, key}: the test payment of the seats now held
  let recheckAt = 0;
  let warnedAt = 0; // the deadline last warned of: once per deadline (an extension is another)
  let held = []; // our held seats at the last refresh: {id, label, expiresAt}

  const summary = h("p", { id: "selection" });
  const holdButton = h("button", { type: "button", id: "hold", class: "primary" }, "Hold selected seats");
  const countdown = h("p", { id: "countdown", class: "countdown" });
  const extend = h("button", { type: "button", id: "extend" }, `Extend by ${EXTEND_MINUTES} minutes`);
  const book = h("button", { type: "button", id: "book", class: "primary" }, "Book (test payment)");
  const release = h("button", { type: "button", id: "release" }, "Release seats");
  const holdPanel = h("div", { class: "hold card", hidden: true, "aria-label": "Your hold", role: "region" },
    countdown, h("p", { class: "actions" }, book, extend, release));

  const live = new LiveSeats(id, {
    onChange: (changed) => changedSeats(changed),
    onLink: (state, seconds) => {
      badge.dataset.link = state;
      badge.textContent = linkText(state, seconds);
    },
    onGone: (reason) => (reason === "signin" ? fail({ status: 401, message: EXPIRED }) : missing()),
    onMoved: () => moved(),
  });
  const map = new SeatMap(live, { selected, onToggle: toggle });

  // The screening moved to another room: the map is the new room's (onChange(null) follows and
  // draws it). The seats selected or held are gone, and so is every hold of the screening.
  function moved() {
    const hadHold = held.length > 0;
    const hadSelection = selected.size > 0;
    const focusInPanel = holdPanel.contains(document.activeElement);
    selected.clear();
    held = []; // ended by the move, not expired: said below, not as a lapse
    payment = null;
    recheckAt = 0;
    const news = hadHold
      ? "This screening moved to another room: your hold has ended. Please choose seats again."
      : hadSelection
        ? "This screening moved to another room: please choose seats again."
        : "The seat map has changed: this screening moved to another room.";
    notify(news, hadHold || hadSelection ? "error" : "info");
    map.update(null); // the new grid now, so that focus has somewhere to go
    refresh();
    // Book, Extend or Release had focus and the hold panel has gone with the hold.
    if (focusInPanel) map.focusStop();
    const header = screeningHeader(id, heading, missing); // read again: the new room's name
    meta.replaceWith(header);
    meta = header;
  }

  function changedSeats(changed) {
    const news = [];
    // The server frees an expired hold at its deadline: often before the countdown shows 0:00.
    const lapsed = held.filter((seat) => live.seats.get(seat.id)?.state === "available"
      && (seat.expiresAt ?? Infinity) - serverNow() < EXPIRY_SLACK_MS);
    if (lapsed.length) news.push(`Your hold on ${lapsed.map((seat) => seat.label).join(", ")} has expired.`);
    // A selected seat now ours is our own hold's event, come before its answer: not news.
    const gone = [...selected].map((seatId) => live.seats.get(seatId)).filter((seat) => seat.state !== "available");
    gone.forEach((seat) => selected.delete(seat.id));
    const taken = gone.filter((seat) => seat.state !== "mine");
    if (taken.length) news.push(`${labels(taken)} ${was(taken)} just taken by someone else.`);
    if (news.length) notify(news.join(" "), lapsed.length ? "error" : "info");
    map.update(changed);
    refresh();
  }

  // A hold refused because seats of it were taken meanwhile: those leave the selection, and
  // are said by row and number. Any other refusal keeps the server's words.
  function seatRace(error, asked) {
    const taken = error.status === 409 ? namedSeats(error, asked, live.seats) : [];
    if (taken.length === 0) return error;
    taken.forEach((seat) => selected.delete(seat.id));
    map.update(taken.map((seat) => seat.id));
    error.message = `Sorry, someone else got there first: ${labels(taken)} ${was(taken)} just taken. Please choose other seats.`;
    return error;
  }

  // A booking refused because holds of it have ended (lapsed, or released elsewhere).
  function lapsedHold(error, asked) {
    const lapsed = error.status === 409 ? namedSeats(error, asked, live.seats) : [];
    if (lapsed.length) error.message = `Nothing was booked: your hold on ${labels(lapsed)} has ended.`;
    return error;
  }

  function missing() {
    clearInterval(timer);
    live.stop();
    missingScreening(section, heading, h("a", { href: "#/" }, "See the showtimes"));
  }

  function toggle(seat) {
    if (seat.state === "available") {
      if (selected.has(seat.id)) selected.delete(seat.id);
      else selected.add(seat.id);
      map.update([seat.id]);
      refresh();
      announce(`${name(seat)} ${selected.has(seat.id) ? "selected" : "unselected"}.`);
    } else {
      const said = { mine: "is held by you", held: "is held by someone else", booked: "is booked" };
      announce(`${name(seat)} ${said[seat.state]}.`);
    }
  }

  function refresh() {
    const chosen = [...selected].map((seatId) => live.seats.get(seatId));
    summary.textContent = chosen.length
      ? `Selected: ${chosen.map((s) => `${s.row}${s.number}`).join(", ")}`
      : "Select seats on the map (arrow keys move, Space selects).";
    holdButton.disabled = chosen.length === 0;
    holdPanel.hidden = live.mine().length === 0;
    held = live.mine().map((s) => ({ id: s.id, label: `${s.row}${s.number}`, expiresAt: s.expiresAt }));
    tick();
  }

  function tick() {
    const mine = live.mine();
    if (mine.length === 0) return;
    const ends = Math.min(...mine.map((s) => s.expiresAt ?? Infinity));
    const left = ends - serverNow();
    const seats = mine.map((s) => `${s.row}${s.number}`).join(", ");
    countdown.textContent = left > 0
      ? `Your seats ${seats} are held for ${clock(left)}`
      : `Your hold on ${seats} has expired.`;
    countdown.dataset.expired = String(left <= 0);
    if (left > 0 && left <= WARN_MS && warnedAt !== ends) {
      warnedAt = ends;
      announce(`Your hold on ${seats} ends in less than a minute. Book or extend it to keep the seats.`);
    }
    if (left <= -RECHECK_MS && recheckAt !== ends) {
      recheckAt = ends; // once per deadline: the event that frees the seats may be delayed
      live.reload();
    }
  }

  function applyHeld(reservations) {
    const updates = reservations.map((r) => ({
      seat_id: r.seat_id, status: "reserved", reserved_by: r.user_id ?? 0, expires_at: r.expires_at,
    }));
    map.update(live.apply(updates));
  }

  async function act(button, work) {
    const focused = document.activeElement === button;
    button.disabled = true;
    try {
      await work();
    } catch (error) {
      fail(error);
      if (error.status === 409) await live.reload();
    } finally {
      button.disabled = false;
      refresh();
      // Book and Release hide the hold panel with the button that had focus: focus goes to the
      // map's seat in the tab order, not back to the start of the page.
      if (focused && button.closest("[hidden]")) map.focusStop();
    }
  }

  holdButton.addEventListener("click", () => act(holdButton, async () => {
    const seatIds = [...selected];
    const body = { screening_id: id, seat_ids: seatIds };
    const answer = await request("POST", "/api/v1/seat-reservations/reserve", { body }).catch((error) => {
      throw seatRace(error, seatIds);
    });
    // The screening moved while this was answered: the hold ended with the move, said already.
    if (!seatIds.every((seatId) => live.seats.has(seatId))) return;
    seatIds.forEach((seatId) => selected.delete(seatId));
    applyHeld(answer.reservations);
    notify(answer.message, "success");
    countdown.focus();
  }));

  extend.addEventListener("click", () => act(extend, async () => {
    const body = { screening_id: id, seat_ids: live.mine().map((s) => s.id) };
    const path = `/api/v1/seat-reservations/extend?additional_minutes=${EXTEND_MINUTES}`;
    const answer = await request("POST", path, { body });
    applyHeld(answer.reservations);
    notify(answer.message, "success");
  }));

  book.addEventListener("click", () => act(book, async () => {
    const seatIds = live.mine().map((s) => s.id);
    const key = seatIds.join(",");
    if (payment?.key !== key) payment = { id: paymentId(), key };
    const body = { screening_id: id, seat_ids: seatIds, payment_id: payment.id };
    const tickets = await request("POST", "/api/v1/tickets/book-from-reservation", { body }).catch((error) => {
      throw lapsedHold(error, seatIds);
    });
    payment = null;
    map.update(live.apply(tickets.map((t) => ({ seat_id: t.seat_id, status: "booked" }))));
    notify(`Booked: ${tickets.length} ticket${tickets.length === 1 ? "" : "s"}. They are in My tickets.`, "success");
  }));

  release.addEventListener("click", () => act(release, async () => {
    const seatIds = live.mine().map((s) => s.id);
    await request("DELETE", `/api/v1/seat-reservations/cancel/${id}?seat_ids=${seatIds.join(",")}`);
    map.update(live.apply(seatIds.map((seatId) => ({ seat_id: seatId, status: "available" }))));
    notify("Your seats are released.", "success");
  }));

  countdown.tabIndex = -1;
  const timer = setInterval(tick, 250);
  ctx.onLeave(() => {
    clearInterval(timer);
    live.stop();
  });
  live.start();
  refresh();

  let meta = screeningHeader(id, heading, missing);
  const zoom = h("p", { class: "zoom" },
    h("button", { type: "button", "aria-label": "Zoom out", onclick: () => map.zoomBy(-0.25) }, "−"),
    h("button", { type: "button", "aria-label": "Zoom in", onclick: () => map.zoomBy(0.25) }, "+"));
  const section = h("section", { class: "screening", "aria-labelledby": "page-title" },
    heading, meta, badge, legend(), zoom, map.element,
    h("div", { class: "choose card" }, summary, h("p", { class: "actions" }, holdButton)),
    holdPanel);
  return section;
}
