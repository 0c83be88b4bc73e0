// A tiny DOM builder: h("button", {class: "x", type: "button"}, "text", child...). Text is
// always set as text, never parsed as HTML, so nothing the API returns can inject markup.

export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

export function formatTime(iso) {
  return new Date(iso).toLocaleString([], { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });
}

export function formatMoney(value) {
  return Number(value).toFixed(2); // the API names no currency
}

// Messages: errors and outcomes in the page's alert region, quiet news in its status region.
// A sticky message outlives the next change of page (the sign-in page says why it is shown).
export function notify(message, kind = "error", sticky = false) {
  const notice = document.getElementById("notice");
  notice.textContent = message;
  notice.dataset.kind = kind;
  notice.dataset.sticky = String(sticky);
  notice.hidden = !message;
}

// An API error said to the person; an expired session (401) leads to the sign-in page, which
// brings them back here afterwards.
export function fail(error) {
  if (error.status !== 401) return notify(error.message);
  notify(error.message, "error", true);
  const here = location.hash.startsWith("#/signin") ? "#/" : location.hash || "#/";
  location.hash = `#/signin?next=${encodeURIComponent(here)}`;
}

export function announce(message) {
  document.getElementById("status").textContent = message;
}
