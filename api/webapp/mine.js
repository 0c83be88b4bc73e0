// My reservations and my tickets, with the screening and the seat's row and number of each.

import { request } from "./api.js";
import { fail, formatMoney, formatTime, h, notify } from "./dom.js";

// The screenings and seat names that a list of reservations or tickets refers to.
async function describe(items) {
  const ids = [...new Set(items.map((i) => i.screening_id))];
  const entries = await Promise.all(ids.map(async (id) => {
    const [screening, seats] = await Promise.all([
      request("GET", `/api/v1/screenings/${id}`),
      request("GET", `/api/v1/seat-reservations/screening/${id}/availability`),
    ]);
    const names = new Map(seats.map(({ seat }) => [seat.id, `Row ${seat.row_label}, seat ${seat.seat_number}`]));
    return [id, { screening, names }];
  }));
  return new Map(entries);
}

function screeningLine(screening) {
  return `${screening.movie_title} · ${formatTime(screening.starts_at)} · ${screening.cinema_name}, ${screening.room_name}`;
}

function page(title, body) {
  return h("section", { "aria-labelledby": "page-title" }, h("h1", { id: "page-title" }, title), body);
}

export function reservationsView() {
  const body = h("div", { class: "list" }, h("p", {}, "Loading…"));
  (async () => {
    const list = await request("GET", "/api/v1/seat-reservations/my-reservations");
    const known = await describe(list);
    const rows = list.map((r) => {
      const { screening, names } = known.get(r.screening_id);
      return h("li", { class: "card item" },
        h("p", {}, h("strong", {}, names.get(r.seat_id) ?? `Seat ${r.seat_id}`), ` · held until ${formatTime(r.expires_at)}`),
        h("p", { class: "meta" }, screeningLine(screening)),
        h("a", { href: `#/screenings/${r.screening_id}` }, "Open the seat map to book or release"));
    });
    body.replaceChildren(rows.length ? h("ul", { class: "plain" }, rows) : h("p", {}, "You hold no seats right now."));
  })().catch(fail);
  return page("My reservations", body);
}

export function ticketsView() {
  const body = h("div", { class: "list" }, h("p", {}, "Loading…"));
  async function load() {
    const list = await request("GET", "/api/v1/tickets/my-tickets");
    const known = await describe(list);
    const rows = list.map((t) => ticketItem(t, known.get(t.screening_id)));
    body.replaceChildren(rows.length ? h("ul", { class: "plain", id: "tickets" }, rows) : h("p", {}, "You have no tickets yet."));
  }
  function ticketItem(ticket, { screening, names }) {
    const seat = names.get(ticket.seat_id) ?? `Seat ${ticket.seat_id}`;
    const item = h("li", { class: "card item ticket", "data-status": ticket.status },
      h("p", {}, h("strong", {}, seat), ` · ${ticket.status} · ${formatMoney(ticket.price)}`),
      h("p", { class: "meta" }, screeningLine(screening)),
      h("p", { class: "meta" }, `Ticket ${ticket.id}`, ticket.payment_id ? ` · payment ${ticket.payment_id}` : ""));
    if (ticket.status === "confirmed" || ticket.status === "pending") {
      item.append(...cancelControls(ticket, seat, screening));
    }
    return item;
  }
  // Cancelling a ticket cannot be undone, so the button asks first, in place. "Keep ticket"
  // takes the focus (a second Enter changes nothing); Escape keeps the ticket too.
  function cancelControls(ticket, seat, screening) {
    const cancel = h("button", { type: "button", "aria-label": `Cancel ticket: ${seat}, ${screening.movie_title}` }, "Cancel ticket");
    const question = h("span", { id: `cancel-${ticket.id}` }, `Cancel this ticket (${seat})? This cannot be undone.`);
    const yes = h("button", { type: "button", class: "danger" }, "Yes, cancel it");
    const keep = h("button", { type: "button" }, "Keep ticket");
    const asking = h("p", { class: "actions confirm", role: "group", "aria-labelledby": question.id, hidden: true },
      question, yes, keep);
    const ask = (open) => {
      cancel.hidden = open;
      asking.hidden = !open;
      (open ? keep : cancel).focus();
    };
    cancel.addEventListener("click", () => ask(true));
    keep.addEventListener("click", () => ask(false));
    asking.addEventListener("keydown", (event) => event.key === "Escape" && ask(false));
    yes.addEventListener("click", async () => {
      yes.disabled = keep.disabled = true;
      try {
        await request("DELETE", `/api/v1/tickets/${ticket.id}`);
        notify(`Ticket cancelled: ${seat}.`, "success");
        await load();
        document.getElementById("main").focus(); // the list was drawn again: not to the page's start
      } catch (error) {
        yes.disabled = keep.disabled = false;
        fail(error);
      }
    });
    return [cancel, asking];
  }
  load().catch(fail);
  return page("My tickets", body);
}
