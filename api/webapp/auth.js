// Sign in and register. After either, the app goes where the visitor was heading (?next=).

import { register, signIn } from "./api.js";
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
      await action(values);
      notify("");
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
  const footer = h("p", {}, "No account yet? ", h("a", { href: `#/register?next=${encodeURIComponent(next)}` }, "Register"));
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
