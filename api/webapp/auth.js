// Sign in and register. After either, the app goes where the visitor was heading (?next=).
// A forgotten password: the reset mail is asked for, and its link opens the reset page.

import { forgotPassword, register, resetPassword, signIn } from "./api.js";
import { h, notify } from "./dom.js";

function field(label, name, type, extra = {}) {
  const id = `f-${name}`;
  return h("p", { class: "field" },
    h("label", { for: id }, label),
    h("input", { id, name, type, required: true, ...extra }));
}

function form(title, fields, submitText, action, next, footer) {
  const submit = h("button", { type: "submit" }, submitText);
  const element = h("form", { class: "card narrow", "aria-labelledby": "form-title" },
    h("h1", { id: "form-title" }, title), ...fields, submit, footer);
  element.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = Object.fromEntries(new FormData(element));
    submit.disabled = true;
    try {
      const said = await action(values); // an outcome to say on the next page, or nothing
      notify(said ?? "", "success", Boolean(said));
      location.hash = next;
    } catch (error) {
      notify(error.message);
    } finally {
      submit.disabled = false;
    }
  });
  return element;
}

export function signInView(params) {
  const next = params.get("next") || "#/";
  const footer = h("p", {}, "No account yet? ", h("a", { href: `#/register?next=${encodeURIComponent(next)}` }, "Register"),
    " · ", h("a", { href: "#/forgot-password" }, "Forgot your password?"));
  return form("Sign in", [
    field("Email", "email", "email", { autocomplete: "username" }),
    field("Password", "password", "password", { autocomplete: "current-password" }),
  ], "Sign in", (v) => signIn(v.email, v.password), next, footer);
}

export function registerView(params) {
  const next = params.get("next") || "#/";
  const footer = h("p", {}, "Have an account? ", h("a", { href: `#/signin?next=${encodeURIComponent(next)}` }, "Sign in"));
  return form("Create an account", [
    field("Full name", "full_name", "text", { autocomplete: "name" }),
    field("Email", "email", "email", { autocomplete: "email" }),
    field("Password", "password", "password", { autocomplete: "new-password", minlength: "8" }),
  ], "Register", (v) => register(v.email, v.password, v.full_name), next, footer);
}

export function forgotView() {
  const footer = h("p", {}, h("a", { href: "#/signin" }, "Back to sign in"));
  return form("Forgot your password?", [
    field("Email", "email", "email", { autocomplete: "email" }),
  ], "Send the reset link", async (v) => (await forgotPassword(v.email)).message, "#/signin", footer);
}

// The page the reset mail's link opens (/reset-password?token=... is sent here).
export function resetView(params) {
  const token = params.get("token") ?? "";
  const footer = h("p", {}, h("a", { href: "#/forgot-password" }, "Ask for a new link"));
  return form("Choose a new password", [
    field("New password", "new_password", "password", { autocomplete: "new-password", minlength: "8" }),
  ], "Set the new password", async (v) => `${(await resetPassword(token, v.new_password)).message}. Please sign in.`,
  "#/signin", footer);
}
