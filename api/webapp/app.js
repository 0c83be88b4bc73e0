// The app: a router over the URL's fragment, the navigation, and the views it shows.
//   #/                  movies and showtimes      #/screenings/{id}   a live seat map
//   #/signin, #/register                          #/reservations, #/tickets
//   #/forgot-password, #/reset-password?token=    (the reset mail's link leads there)
//   #/admin, #/admin/screenings/{id}             (admins)

import { currentSession, onSession, signOut } from "./api.js";
import { h, notify } from "./dom.js";
import { adminListView, adminScreeningView } from "./admin.js";
import { forgotView, registerView, resetView, signInView } from "./auth.js";
import { reservationsView, ticketsView } from "./mine.js";
import { screeningView } from "./screening.js";
import { showtimesView } from "./showtimes.js";

// [pattern, view, who may see it]: "any", "user" (signed in) or "admin".
const ROUTES = [
  [/^\/$/, () => showtimesView(), "any"],
  [/^\/signin$/, (_, params) => signInView(params), "any"],
  [/^\/register$/, (_, params) => registerView(params), "any"],
  [/^\/forgot-password$/, () => forgotView(), "any"],
  [/^\/reset-password$/, (_, params) => resetView(params), "any"],
  [/^\/screenings\/(\d+)$/, (m, _, ctx) => screeningView(Number(m[1]), ctx), "user"],
  [/^\/reservations$/, () => reservationsView(), "user"],
  [/^\/tickets$/, () => ticketsView(), "user"],
  [/^\/admin$/, () => adminListView(), "admin"],
  [/^\/admin\/screenings\/(\d+)$/, (m, _, ctx) => adminScreeningView(Number(m[1]), ctx), "admin"],
];

let leaving = [];

function parse() {
  const [path, query = ""] = (location.hash.slice(1) || "/").split("?");
  return { path: path || "/", params: new URLSearchParams(query) };
}

function allowed(who) {
  const user = currentSession()?.user;
  return who === "any" || (user && (who === "user" || user.role === "admin"));
}

function show() {
  leaving.splice(0).forEach((fn) => fn());
  const notice = document.getElementById("notice");
  if (notice.dataset.sticky === "true") notice.dataset.sticky = "false";
  else notify("");
  const { path, params } = parse();
  const main = document.getElementById("main");
  const route = ROUTES.find(([pattern]) => pattern.test(path));
  if (!route) {
    main.replaceChildren(h("h1", {}, "Page not found"), h("p", {}, h("a", { href: "#/" }, "See the showtimes")));
    return;
  }
  const [pattern, view, who] = route;
  if (!allowed(who)) {
    if (currentSession()) notify("That page is for administrators.");
    else location.hash = `#/signin?next=${encodeURIComponent(location.hash)}`;
    if (currentSession()) main.replaceChildren(h("h1", {}, "Not allowed"));
    return;
  }
  const ctx = { onLeave: (fn) => leaving.push(fn) };
  main.replaceChildren(view(path.match(pattern), params, ctx));
  document.title = `${main.querySelector("h1")?.textContent ?? "seatlock"} · seatlock`;
}

function navigation() {
  const user = currentSession()?.user;
  for (const element of document.querySelectorAll("[data-when]")) {
    const when = element.dataset.when;
    element.hidden = !(when === "guest" ? !user : when === "user" ? user : user?.role === "admin");
  }
  document.getElementById("who").textContent = user ? `Signed in as ${user.name}` : "";
}

document.getElementById("signout").addEventListener("click", async () => {
  await signOut().catch(() => {});
  notify("You are signed out.", "success", true);
  if (location.hash === "#/") show();
  else location.hash = "#/";
});
onSession(navigation);
window.addEventListener("hashchange", show);
navigation();
show();
