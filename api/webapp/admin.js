// The admin view: pick a screening, watch its map fill live, with counts and the number of
// WebSocket watchers of every server process (/ws/stats).

import { EXPIRED, request } from "./api.js";
import { fail, formatTime, h } from "./dom.js";
import { LiveSeats } from "./live.js";
import { SeatMap, legend } from "./seatmap.js";
import { linkBadge, linkText, missingScreening, screeningHeader } from "./screening.js";

const STATS_EVERY_MS = 2000;

export function adminListView() {
  const body = h("div", {}, h("p", {}, "Loading screenings…"));
  request("GET", "/api/v1/screenings/?limit=200").then((list) => {
    const items = list.map((s) => h("li", {}, h("a", { href: `#/admin/screenings/${s.id}` },
      `${formatTime(s.starts_at)} · ${s.movie_title} · ${s.cinema_name}, ${s.room_name}`)));
    body.replaceChildren(items.length ? h("ul", { class: "plain picks" }, items) : h("p", {}, "No upcoming screenings."));
  }, fail);
  return h("section", { "aria-labelledby": "page-title" },
    h("h1", { id: "page-title" }, "Admin: watch a screening"), body);
}

function count(label, id) {
  const value = h("dd", { id }, "–");
  return [h("dt", {}, label), value];
}

export function adminScreeningView(id, ctx) {
  const heading = h("h1", { id: "page-title" }, `Screening ${id}`);
  const badge = linkBadge();
  const counts = h("dl", { class: "counts", "aria-live": "polite" },
    ...count("Free", "count-free"), ...count("Held", "count-held"),
    ...count("Booked", "count-booked"), ...count("Watching now", "count-watchers"));
  const live = new LiveSeats(id, {
    onChange: (changed) => {
      map.update(changed);
      const c = live.counts();
      counts.querySelector("#count-free").textContent = c.available;
      counts.querySelector("#count-held").textContent = c.held;
      counts.querySelector("#count-booked").textContent = c.booked;
    },
    onLink: (state, seconds) => {
      badge.dataset.link = state;
      badge.textContent = linkText(state, seconds);
    },
    onGone: (reason) => (reason === "signin" ? fail({ status: 401, message: EXPIRED }) : missing()),
    // Moved to another room: onChange(null) redraws the map and the counts; the name is re-read.
    onMoved: () => {
      const header = screeningHeader(id, heading, missing);
      meta.replaceWith(header);
      meta = header;
    },
  });
  const map = new SeatMap(live);
  async function watchers() {
    try {
      const stats = await request("GET", "/ws/stats");
      counts.querySelector("#count-watchers").textContent = stats.screening_details[String(id)] ?? 0;
    } catch (error) {
      fail(error);
    }
  }
  function missing() {
    clearInterval(timer);
    live.stop();
    missingScreening(section, heading, h("a", { href: "#/admin" }, "Another screening"));
  }
  const timer = setInterval(watchers, STATS_EVERY_MS);
  ctx.onLeave(() => {
    clearInterval(timer);
    live.stop();
  });
  live.start();
  watchers();
  let meta = screeningHeader(id, heading, missing);
  const section = h("section", { class: "screening admin", "aria-labelledby": "page-title" },
    heading, meta, badge, counts, legend(), map.element,
    h("p", {}, h("a", { href: "#/admin" }, "Another screening")));
  return section;
}
