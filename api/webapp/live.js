// A screening's seats kept in step with the server: the availability read once the WebSocket is
// confirmed, then every seat_update / bulk_seat_update applied on top (docs/websockets.md).
//
// Order matters: the socket is opened first and the availability read after its
// connection_confirmed, so no change falls between the two. Messages that arrive during the read
// are queued and replayed after it, in order (applying an update the read already shows changes
// nothing). After any reconnect the availability is read again, with If-None-Match: an unchanged
// map is a 304.
//
// A seat_snapshot is the whole map of another room: an admin moved the screening. It replaces the
// layout and every seat (none of the old room's exists any more), unless the map is already at
// its version or later; a read answered after it with an older map is dropped, so the old room
// never comes back. The owner hears onMoved() first (a map it had shown is gone), then
// onChange(null).

import { refresh, request, token } from "./api.js";

const BACKOFF_MS = 500;
const BACKOFF_MAX_MS = 30000;
const SEAT_MESSAGES = new Set(["seat_update", "bulk_seat_update", "seat_snapshot"]);

export function stateOf(update) {
  if (update.status === "available") return "available";
  if (update.status === "booked") return "booked";
  // reserved_by is sent only to the holder: any id there is ours (invariant 9).
  return update.reserved_by != null ? "mine" : "held";
}

export class LiveSeats {
  constructor(screeningId, { onChange, onLink, onGone, onMoved = () => {} }) {
    this.screeningId = screeningId;
    this.seats = new Map(); // seat id -> {id, row, number, type, state, expiresAt}
    this.rows = []; // [{label, seats: [seat...]}] in display order
    this.told = this.rows; // the rows the owner last heard of (a new layout is a move to tell)
    this.onChange = onChange; // (changedIds | null for "everything") => void
    this.onLink = onLink; // ("live" | "connecting" | "offline", seconds?) => void
    this.onGone = onGone; // ("missing" | "signin") => void: no such screening, or sign in again
    this.onMoved = onMoved; // () => void: the map shown was replaced by another room's
    this.etag = null;
    this.version = null; // of the map last read or replaced (X-Seat-Map-Version); null: unknown
    this.attempt = 0;
    this.socket = null;
    this.stopped = false;
    this.retryTimer = null;
  }

  start() {
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.socket?.close(1000);
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = token() ? `?token=${encodeURIComponent(token())}` : "";
    const url = `${scheme}//${location.host}/ws/screenings/${this.screeningId}${query}`;
    const ws = new WebSocket(url);
    this.socket = ws;
    this.onLink("connecting");
    let early = []; // messages received while the availability is being read; null once read
    ws.onmessage = async (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "connection_confirmed") {
        try {
          await this.load();
        } catch (error) {
          if (error.status === 404) return this.gone("missing");
          if (error.status === 401) return this.gone("signin");
          ws.close(4000); // onclose reconnects with back-off
          return;
        }
        if (ws !== this.socket) return;
        this.attempt = 0;
        const queued = early;
        early = null;
        queued.forEach((queuedMessage) => this.take(queuedMessage));
        this.report(null); // a reconnect's read may find the screening moved meanwhile
        this.onLink("live");
      } else if (SEAT_MESSAGES.has(message.type)) {
        if (early) early.push(message); // a snapshot too: the read under way must not undo it
        else this.report(this.take(message));
      }
    };
    ws.onclose = (event) => this.closed(ws, event.code);
  }

  async closed(ws, code) {
    if (this.stopped || ws !== this.socket) return;
    if (code === 4404) return this.gone("missing");
    if (code === 1008 && token()) {
      // The token was refused (expired or revoked): a fresh one, or sign in again when the
      // refresh is refused too. One that failed for a passing reason (503, no network) is
      // tried again with the next connection, after the back-off.
      try {
        await refresh();
      } catch (error) {
        if (error.status === 401) return this.gone("signin");
      }
      if (this.stopped) return; // left the page meanwhile
    }
    // Back-off with jitter, so a restarted server is not met by every client at once.
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MS * 2 ** this.attempt++);
    const wait = delay * (0.5 + Math.random() / 2);
    this.onLink("offline", Math.ceil(wait / 1000));
    this.retryTimer = setTimeout(() => this.connect(), wait);
  }

  gone(reason) {
    this.stop();
    this.onGone(reason);
  }

  // The availability, revalidated: a 304 means the map is exactly what was read last.
  async load() {
    const path = `/api/v1/seat-reservations/screening/${this.screeningId}/availability`;
    const answer = await request("GET", path, { etag: this.etag });
    if (answer.notModified) return;
    // 0 (or none): the read loaded the screening, its version is not known.
    const version = Number(answer.headers.get("X-Seat-Map-Version")) || null;
    // Older than the map in hand: a seat_snapshot (a move) came while this was read.
    if (version !== null && this.version !== null && version < this.version) return;
    this.etag = answer.etag;
    this.version = version;
    this.show(answer.data);
  }

  // Re-read now (a lapsed hold of ours that no event has announced yet).
  reload() {
    return this.load().then(() => this.report(null), () => {});
  }

  // Tells the owner what changed (ids, or null: everything); first that the map it was shown is
  // another room's now, when the layout was replaced since it last heard (once per new layout,
  // however many reads and snapshots overlapped).
  report(changed) {
    const moved = this.told.length > 0 && this.rows !== this.told;
    this.told = this.rows;
    if (moved) this.onMoved();
    this.onChange(changed);
  }

  // Applies one socket message; returns the ids of the seats that changed (null: all of them).
  take(message) {
    if (message.type === "seat_update") return this.apply([message]);
    if (message.type === "bulk_seat_update") return this.apply(message.updates);
    return this.replace(message) ? null : new Set();
  }

  // A seat_snapshot: the new room's whole map. One not newer than the map in hand (a read
  // answered after the move has it already) changes nothing.
  replace(snapshot) {
    if (this.version !== null && snapshot.version <= this.version) return false;
    this.etag = null; // stood for the old map: a 304 to it would mean nothing now
    this.version = snapshot.version;
    this.show(snapshot.seats);
    return true;
  }

  // A whole map (the availability's list, or a snapshot's): laid out again when its seats are
  // not the ones laid out (the first map, or another room), then every seat's state applied.
  show(list) {
    const same = list.length === this.seats.size && list.every(({ seat }) => this.seats.has(seat.id));
    if (!same) this.layout(list);
    this.apply(list.map((s) => ({ ...s, seat_id: s.seat.id })));
  }

  // Builds the seats and rows afresh: nothing of a previous layout is kept.
  layout(list) {
    this.seats.clear();
    const rows = new Map();
    for (const { seat } of list) {
      const entry = { id: seat.id, row: seat.row_label, number: seat.seat_number };
      Object.assign(entry, { type: seat.seat_type, state: "available", expiresAt: null });
      this.seats.set(seat.id, entry);
      if (!rows.has(seat.row_label)) rows.set(seat.row_label, []);
      rows.get(seat.row_label).push(entry);
    }
    const byLabel = (a, b) => a.length - b.length || a.localeCompare(b);
    this.rows = [...rows.keys()].sort(byLabel).map((label) => ({
      label,
      seats: rows.get(label).sort((a, b) => a.number - b.number),
    }));
  }

  // Applies updates in the order given; returns the ids of the seats that changed.
  apply(updates) {
    const changed = new Set();
    for (const update of updates) {
      const seat = this.seats.get(update.seat_id);
      if (!seat) continue;
      const state = stateOf(update);
      const expiresAt = update.expires_at ? Date.parse(update.expires_at) : null;
      if (seat.state !== state || seat.expiresAt !== expiresAt) changed.add(seat.id);
      seat.state = state;
      seat.expiresAt = expiresAt;
    }
    return changed;
  }

  mine() {
    return [...this.seats.values()].filter((s) => s.state === "mine");
  }

  counts() {
    const counts = { available: 0, held: 0, booked: 0 };
    for (const seat of this.seats.values()) {
      counts[seat.state === "mine" ? "held" : seat.state] += 1;
    }
    return counts;
  }
}
