// The API client: the session (tokens in sessionStorage), requests with the bearer token, the
// refresh of the access token before it expires, and a clear message for every error status.

const KEY = "seatlock.session";
const REFRESH_MARGIN_S = 60; // refresh this long before the access token expires
const RETRY_REFRESH_MS = 10000;
const listeners = new Set();
let session = load();
let refreshTimer = null;
let refreshing = null; // the refresh in flight: concurrent 401s share one refresh

export class ApiError extends Error {
  constructor(status, detail, message) {
    super(message);
    this.status = status;
    this.detail = detail;
  }
}

function load() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY)) || null;
  } catch {
    return null;
  }
}

function save(next) {
  session = next;
  if (next) sessionStorage.setItem(KEY, JSON.stringify(next));
  else sessionStorage.removeItem(KEY);
  schedule();
  listeners.forEach((fn) => fn(session));
}

export const currentSession = () => session;
export const token = () => session?.access_token ?? null;
export const onSession = (fn) => listeners.add(fn);

// The access token is refreshed REFRESH_MARGIN_S before it expires (or half-way for short ones),
// so a page left open keeps a working token for its WebSocket and its next click.
function schedule() {
  clearTimeout(refreshTimer);
  if (!session) return;
  const left = session.expires_at - Date.now();
  const lead = Math.min(REFRESH_MARGIN_S * 1000, (session.expires_in * 1000) / 2);
  refreshTimer = setTimeout(() => refresh().catch(retryLater), Math.max(1000, left - lead));
}

// A refresh that failed for a passing reason (503, no network) is tried again shortly; a
// refused one (401) has ended the session already.
function retryLater(error) {
  if (error.status !== 401 && session) {
    refreshTimer = setTimeout(() => refresh().catch(retryLater), RETRY_REFRESH_MS);
  }
}

function tokens(body, previous) {
  return {
    ...previous,
    access_token: body.access_token,
    refresh_token: body.refresh_token ?? previous?.refresh_token,
    expires_in: body.expires_in,
    expires_at: Date.now() + body.expires_in * 1000,
  };
}

export function refresh() {
  if (!session) return Promise.reject(new ApiError(401, null, EXPIRED));
  refreshing ??= send("POST", "/api/v1/auth/refresh-token", {
    body: { refresh_token: session.refresh_token },
    auth: false,
  })
    .then((body) => save(tokens(body, session)))
    .catch((error) => {
      if (error.status === 401) save(null);
      throw error;
    })
    .finally(() => (refreshing = null));
  return refreshing;
}

export async function signIn(email, password) {
  const body = await send("POST", "/api/v1/auth/login", { body: { email, password }, auth: false });
  save(tokens(body, null));
  const me = await request("GET", "/api/v1/auth/me");
  save({ ...session, user: { id: me.id, email: me.email, name: me.full_name, role: me.role } });
}

export async function register(email, password, fullName) {
  const body = { email, password, full_name: fullName };
  await send("POST", "/api/v1/auth/register", { body, auth: false });
  await signIn(email, password);
}

export function forgotPassword(email) {
  return send("POST", "/api/v1/auth/forgot-password", { body: { email }, auth: false });
}

// A new password with the token of the reset mail; the server signs every session out.
export async function resetPassword(token, newPassword) {
  const body = { token, new_password: newPassword };
  const answer = await send("POST", "/api/v1/auth/reset-password", { body, auth: false });
  save(null);
  return answer;
}

// The session ends here first: the server closes the map's socket as it revokes the session
// (1008), and a socket closed while a session is held would try to refresh it, fail, and say
// "expired" to someone who signed out.
export async function signOut() {
  const ending = session;
  save(null);
  if (ending) await send("POST", "/api/v1/auth/logout", { bearer: ending.access_token });
}

// The server's clock, from the Date header of its answers. Hold deadlines (expires_at) are the
// server's times, so a countdown against a browser clock that is minutes off would be minutes
// wrong; the header has a resolution of one second, so smaller differences are ignored.
const CLOCK_RESOLUTION_MS = 1500;
let clockOffset = 0;

export function serverNow() {
  return Date.now() + clockOffset;
}

function noteServerClock(response) {
  const date = Date.parse(response.headers.get("Date") ?? "");
  if (Number.isNaN(date)) return;
  const offset = date + 500 - Date.now(); // the header's second, taken at its middle
  clockOffset = Math.abs(offset) > CLOCK_RESOLUTION_MS ? offset : 0;
}

// A request with the session's token; a 401 is retried once after a refresh of the token. A
// refresh refused (401) has ended the session; one that failed for a passing reason (503, no
// network) has not: its error is said, and the session kept for the next try.
export async function request(method, path, options = {}) {
  try {
    return await send(method, path, options);
  } catch (error) {
    if (error.status !== 401 || !session || options.auth === false) throw error;
    await refresh().catch((failed) => {
      throw failed.status === 401 ? new ApiError(401, null, EXPIRED) : failed;
    });
    return send(method, path, options);
  }
}

// With `etag` (a string, or null when none is held yet) the answer is {etag, headers, data}, or
// {notModified: true} when the server answers 304 to If-None-Match.
async function send(method, path, { body, auth = true, etag, bearer = session?.access_token } = {}) {
  const all = { Accept: "application/json" };
  if (etag) all["If-None-Match"] = etag;
  if (auth && bearer) all.Authorization = `Bearer ${bearer}`;
  if (body !== undefined) all["Content-Type"] = "application/json";
  let response;
  try {
    const init = { method, headers: all, cache: "no-store" };
    if (body !== undefined) init.body = JSON.stringify(body);
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, null, "Cannot reach the server. Check your connection and try again.");
  }
  noteServerClock(response);
  if (response.status === 304) return { notModified: true };
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) throw failure(response, data, Boolean(all.Authorization));
  if (etag !== undefined) return { etag: response.headers.get("ETag"), headers: response.headers, data };
  return data;
}

export const EXPIRED = "Your session has expired. Please sign in again.";

// One sentence a person can act on, for every status the API answers with.
function failure(response, data, signedIn) {
  const detail = data?.detail;
  const said = typeof detail === "string" ? detail : "";
  const wait = response.headers.get("Retry-After");
  const messages = {
    400: said || "The request was not accepted.",
    401: signedIn ? EXPIRED : said || "Please sign in.",
    402: `Payment was not accepted. ${said}`,
    403: "You are not allowed to do that.",
    404: said || "Not found: it may have been removed.",
    // A 409 is any refusal by the current state (an email in use, the seat limit, a seat taken):
    // the server's words say which. The seat map words a seat race itself (screening.js).
    409: said || "That is not possible right now. Please reload and try again.",
    413: "That request is too large.",
    422: `Please check what you entered: ${validation(detail)}`,
    429: `Too many attempts. Please wait ${wait ? `${wait} s` : "a moment"} and try again.`,
    503: "The service is busy right now. Please try again in a moment.",
  };
  const message = messages[response.status] ?? `Something went wrong (${response.status}). Please try again.`;
  return new ApiError(response.status, detail, message.trim());
}

function validation(detail) {
  if (!Array.isArray(detail)) return detail || "some fields are not valid.";
  return detail.map((d) => `${d.loc?.slice(1).join(".") || "input"}: ${d.msg}`).join("; ");
}

schedule();
