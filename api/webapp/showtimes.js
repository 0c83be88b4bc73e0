// Movies and showtimes: a day picker and a search over the day's films and cinemas.

import { request, serverNow } from "./api.js";
import { formatMoney, h, notify } from "./dom.js";

const DAYS = 7;

function days() {
  const today = new Date();
  return Array.from({ length: DAYS }, (_, n) => new Date(today.getFullYear(), today.getMonth(), today.getDate() + n));
}

// A day of the picker is the person's own calendar day: from its local midnight to the next one,
// asked for as a from/to window (the API's `date` is a UTC day).
function dayWindow(date) {
  const next = new Date(date.getFullYear(), date.getMonth(), date.getDate() + 1);
  return `from=${encodeURIComponent(date.toISOString())}&to=${encodeURIComponent(next.toISOString())}`;
}

function dayName(date, n) {
  if (n === 0) return "Today";
  if (n === 1) return "Tomorrow";
  return date.toLocaleDateString([], { weekday: "short", day: "numeric", month: "short" });
}

function time(iso) {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function movieCard(showtimes) {
  const { movie } = showtimes[0];
  const links = showtimes.map((s) =>
    h("li", {}, h("a", { class: "showtime", href: `#/screenings/${s.id}`,
      "aria-label": `${movie.title}, ${time(s.starts_at)}, ${s.cinema.name}, ${s.room.name}` },
      h("strong", {}, time(s.starts_at)), h("span", {}, `${s.room.name} · ${formatMoney(s.price)}`))));
  const meta = [`${movie.duration_minutes} min`, movie.age_rating && `rated ${movie.age_rating}`,
    showtimes[0].cinema.name].filter(Boolean).join(" · ");
  return h("article", { class: "card movie" }, h("h2", {}, movie.title), h("p", { class: "meta" }, meta),
    h("ul", { class: "showtimes", "aria-label": `Showtimes of ${movie.title}` }, links));
}

function render(list, query, results) {
  const needle = query.trim().toLowerCase();
  const now = serverNow(); // a screening that has started takes no more holds
  const hit = (s) => Date.parse(s.starts_at) > now && (!needle
    || s.movie.title.toLowerCase().includes(needle) || s.cinema.name.toLowerCase().includes(needle));
  const byMovie = new Map();
  for (const s of list.filter(hit)) {
    const key = `${s.movie_id}:${s.cinema_id}`;
    if (!byMovie.has(key)) byMovie.set(key, []);
    byMovie.get(key).push(s);
  }
  const cards = [...byMovie.values()].map(movieCard);
  results.replaceChildren(...(cards.length ? cards : [h("p", {}, "No showtimes match on this day.")]));
}

export function showtimesView() {
  let list = [];
  const results = h("div", { class: "movies", "aria-live": "polite" }, h("p", {}, "Loading showtimes…"));
  const search = h("input", { type: "search", id: "search", placeholder: "Film or cinema" });
  search.addEventListener("input", () => render(list, search.value, results));
  const picker = h("div", { class: "days", role: "group", "aria-label": "Day" });
  let picked = 0; // the latest pick: an earlier day's answer that arrives after it is dropped
  async function pick(date, button) {
    const mine = ++picked;
    for (const b of picker.children) b.setAttribute("aria-pressed", String(b === button));
    try {
      const day = await request("GET", `/api/v1/showtimes/?${dayWindow(date)}&limit=200`);
      if (mine !== picked) return;
      list = day;
      render(list, search.value, results);
    } catch (error) {
      if (mine === picked) notify(error.message);
    }
  }
  days().forEach((date, n) => {
    const button = h("button", { type: "button", "aria-pressed": "false" }, dayName(date, n));
    button.addEventListener("click", () => pick(date, button));
    picker.append(button);
  });
  pick(days()[0], picker.firstChild);
  return h("section", { "aria-labelledby": "page-title" },
    h("h1", { id: "page-title" }, "Movies and showtimes"),
    h("div", { class: "filters" }, picker,
      h("p", { class: "field" }, h("label", { for: "search" }, "Search"), search)),
    results);
}
