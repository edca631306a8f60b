// Small behaviours for the key portal. No build step; loaded with the CSP nonce.
(function () {
  "use strict";

  // Copy the one-time secret to the clipboard; fall back to selecting it for Ctrl+C.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.querySelector(button.getAttribute("data-copy"));
    var status = button.parentElement.querySelector("[data-copy-status]");
    if (!source) return;
    var say = function (text) { if (status) status.textContent = text; };
    var selectIt = function () {
      var range = document.createRange();
      range.selectNodeContents(source);
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      say("Selected: press Ctrl+C (⌘C on a Mac) to copy.");
    };
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(source.textContent.trim()).then(function () { say("Copied to the clipboard."); }, selectIt);
    } else {
      selectIt();
    }
  });

  // Remove every secret from the page, leaving a note in its place.
  function removeSecrets() {
    document.querySelectorAll("[data-secret]").forEach(function (el) { el.textContent = ""; });
    document.querySelectorAll("[data-secret-panel]").forEach(function (panel) {
      var note = document.createElement("p");
      note.setAttribute("role", "status");
      note.className = "notice";
      note.append("The key was removed from this page. ");
      var again = document.createElement("a");
      again.href = panel.getAttribute("data-new-key-url");
      again.textContent = "Create another key";
      note.append(again);
      panel.replaceWith(note);
      again.focus();
    });
  }

  // "I've stored it" goes to My keys (the new key marked): clear the secret before leaving.
  document.addEventListener("submit", function (event) {
    // Only the text: a form taken out of the page during its own submit event is not sent.
    if (!event.target.closest("[data-dismiss-secret]")) return;
    document.querySelectorAll("[data-secret]").forEach(function (el) { el.textContent = ""; });
  });

  // Leaving the page (or the back/forward cache keeping it) must not keep the secret.
  window.addEventListener("pagehide", removeSecrets);

  // Focus after every swap a person caused, so keyboard and screen-reader users land on the result
  // and the next Tab stays in the page: the new secret, else the first invalid field, else the error
  // summary, else what the swap marked [data-focus] (a question, a confirmation), else the page's
  // landing point (the audit log's results heading), else any status message, else the new content.
  // A swap that loads by itself (spend, usage) moves focus only if it removed the focused element.
  var focusedBeforeSwap = null;
  document.addEventListener("htmx:beforeSwap", function () { focusedBeforeSwap = document.activeElement; });
  function focusable(el) {
    if (el.tabIndex < 0 && !el.hasAttribute("tabindex")) el.setAttribute("tabindex", "-1");
    return el;
  }
  // After settle, not after swap: htmx wires the new content's hx-* attributes while settling, and a
  // keyboard user who acts on the focused element at once must meet a live htmx form, not a plain one.
  document.addEventListener("htmx:afterSettle", function (event) {
    var root = event.target;
    var config = event.detail.requestConfig || {};
    var lost = focusedBeforeSwap && focusedBeforeSwap !== document.body && !document.contains(focusedBeforeSwap);
    if (!config.triggeringEvent && !lost) return;
    var pick = ["[data-secret-panel]", '[aria-invalid="true"]', '[role="alert"]', "[data-focus]"];
    for (var i = 0; i < pick.length; i++) {
      var found = root.matches(pick[i]) ? root : root.querySelector(pick[i]);
      if (found) return focusable(found).focus();
    }
    var landing = document.querySelector("[data-focus-after-swap]") || root.querySelector('[role="status"]');
    focusable(landing || root).focus();
  });

  // Errors htmx does not swap in (500, lost connection): say so honestly.
  function showError(text) {
    var box = document.getElementById("htmx-error");
    if (!box) return;
    box.textContent = text;
    box.hidden = false;
  }
  document.addEventListener("htmx:responseError", function () {
    showError("Something went wrong in the portal. If you were creating a key, check with the portal admins before trying again: it may or may not have been created.");
  });
  document.addEventListener("htmx:sendError", function () {
    showError("The portal could not be reached. If you were creating a key, it may or may not have been created; check before trying again.");
  });
  document.addEventListener("htmx:beforeRequest", function () {
    var box = document.getElementById("htmx-error");
    if (box) box.hidden = true;
  });
})();

// Audit times are printed in UTC; the viewer's local time appears on hover.
(function () {
  "use strict";
  function localTimes(root) {
    root.querySelectorAll("time[data-local]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when)) el.title = when.toLocaleString() + " (your time)";
    });
  }
  document.addEventListener("DOMContentLoaded", function () { localTimes(document); });
  document.addEventListener("htmx:afterSwap", function (event) { localTimes(event.target.parentNode || document); });
})();
