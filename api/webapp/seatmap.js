// The seat map: an ARIA grid of seat buttons with a roving tabindex (one seat is in the tab
// order; arrow keys, Home and End move over the seats, Space or Enter selects). Each seat's state
// is shown by colour and by shape and a mark (CSS, data-state), and said in its label.

import { h } from "./dom.js";

const SAID = {
  available: "available",
  mine: "held by you",
  held: "held by someone else",
  booked: "booked",
};

export const LEGEND = [
  ["available", "Available"],
  ["selected", "Selected"],
  ["mine", "Held by you"],
  ["held", "Held by others"],
  ["booked", "Booked"],
  ["wheelchair", "Wheelchair space"],
];

export function seatLabel(seat, selected) {
  const parts = [`Row ${seat.row}`, `seat ${seat.number}`, SAID[seat.state]];
  if (seat.type && seat.type !== "standard") parts.push(seat.type);
  if (selected) parts.push("selected");
  return parts.join(", ");
}

export function legend() {
  const items = LEGEND.map(([state, text]) =>
    h("li", {}, h("span", { class: "seat sample", "data-state": state, "aria-hidden": "true" }), text),
  );
  return h("ul", { class: "legend", "aria-label": "Legend" }, ...items);
}

export class SeatMap {
  // live: a LiveSeats; selected: a Set of seat ids (null: a read-only map); onToggle(seat).
  constructor(live, { selected = null, onToggle = () => {} } = {}) {
    this.live = live;
    this.selected = selected;
    this.onToggle = onToggle;
    this.buttons = new Map();
    this.built = null; // the live.rows the grid was built from
    this.zoom = 1;
    this.grid = h("div", { class: "grid", role: "grid", "aria-label": "Seat map" });
    this.grid.addEventListener("keydown", (e) => this.key(e));
    // A button "clicks" on Space's keyup too: keydown has selected already.
    this.grid.addEventListener("keyup", (e) => e.key === " " && e.preventDefault());
    this.grid.addEventListener("click", (e) => this.click(e));
    this.element = h(
      "div",
      { class: "map" },
      h("div", { class: "screen", "aria-hidden": "true" }, "Screen"),
      h("div", { class: "scroller" }, this.grid),
    );
  }

  zoomBy(step) {
    this.zoom = Math.min(2, Math.max(0.5, this.zoom + step));
    this.element.style.setProperty("--zoom", String(this.zoom));
  }

  // Draws every seat (the grid is built first, and built again when the layout is another one:
  // the screening moved to another room), or only the seats in `changed`.
  update(changed) {
    if (this.built !== this.live.rows) this.build();
    const ids = changed ?? this.buttons.keys();
    for (const id of ids) {
      const seat = this.live.seats.get(id);
      if (seat) this.paint(seat); // an id of a layout that has been replaced: nothing to draw
    }
  }

  // Builds the grid from live.rows, in place of any earlier one. Focus on a seat that goes with
  // the old grid moves to the new one's tab stop (its first seat), not to the start of the page.
  build() {
    const hadFocus = this.grid.contains(document.activeElement);
    this.grid.replaceChildren();
    this.buttons.clear();
    this.built = this.live.rows;
    let first = true;
    for (const row of this.live.rows) {
      const cells = row.seats.map((seat) => {
        const button = h("button", {
          type: "button",
          class: "seat",
          role: "gridcell",
          tabindex: first ? "0" : "-1",
          "data-seat-id": String(seat.id),
          "data-type": seat.type,
        }, String(seat.number));
        first = false;
        this.buttons.set(seat.id, button);
        return button;
      });
      const header = h("span", { class: "row-label", role: "rowheader" }, row.label);
      this.grid.append(h("div", { class: "row", role: "row" }, header, ...cells));
    }
    if (hadFocus) this.focusStop();
  }

  paint(seat) {
    const button = this.buttons.get(seat.id);
    const selected = this.selected?.has(seat.id) ?? false;
    button.dataset.state = selected && seat.state === "available" ? "selected" : seat.state;
    button.setAttribute("aria-label", seatLabel(seat, selected));
    button.setAttribute("aria-selected", String(selected));
    const selectable = this.selected !== null && seat.state === "available";
    button.setAttribute("aria-disabled", String(!selectable));
  }

  click(event) {
    const button = event.target.closest("button.seat");
    if (button) this.toggle(button);
  }

  toggle(button) {
    this.focus(button);
    const seat = this.live.seats.get(Number(button.dataset.seatId));
    if (this.selected !== null) this.onToggle(seat);
  }

  key(event) {
    const button = event.target.closest("button.seat");
    if (!button) return;
    if (event.key === " " || event.key === "Enter") {
      event.preventDefault(); // a button would also "click" on keyup: select exactly once
      this.toggle(button);
      return;
    }
    const next = this.neighbour(button, event.key);
    if (next) {
      event.preventDefault();
      this.focus(next);
      next.focus();
    }
  }

  // Focuses the seat that is the map's tab stop (when the control that had focus has gone).
  focusStop() {
    this.grid.querySelector('button.seat[tabindex="0"]')?.focus();
  }

  focus(button) {
    for (const other of this.grid.querySelectorAll('button.seat[tabindex="0"]')) {
      other.tabIndex = -1;
    }
    button.tabIndex = 0;
  }

  // The seat an arrow key leads to: along the row, or the nearest seat by position in the
  // row above or below (rows may differ in length).
  neighbour(button, key) {
    const row = button.parentElement;
    const seats = [...row.querySelectorAll("button.seat")];
    const index = seats.indexOf(button);
    if (key === "ArrowLeft") return seats[index - 1];
    if (key === "ArrowRight") return seats[index + 1];
    if (key === "Home") return seats[0];
    if (key === "End") return seats.at(-1);
    const other = key === "ArrowUp" ? row.previousElementSibling : key === "ArrowDown" ? row.nextElementSibling : null;
    if (!other) return null;
    const below = [...other.querySelectorAll("button.seat")];
    return below[Math.min(index, below.length - 1)];
  }
}
