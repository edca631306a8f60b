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
      again.href = panel.querySelector("form[data-dismiss-secret]").getAttribute("action");
      again.textContent = "Create another key";
      note.append(again);
      panel.replaceWith(note);
      again.focus();
    });
  }

  // "I've stored it": without JavaScript this form simply loads a fresh page.
  document.addEventListener("submit", function (event) {
    if (!event.target.closest("[data-dismiss-secret]")) return;
    event.preventDefault();
    removeSecrets();
  });

  // Leaving the page (or the back/forward cache keeping it) must not keep the secret.
  window.addEventListener("pagehide", removeSecrets);

  // Move focus to a freshly shown secret, so keyboard and screen-reader users land on it.
  document.addEventListener("htmx:afterSwap", function () {
    var panel = document.querySelector("[data-secret-panel]");
    if (panel) panel.focus();
  });

  // A swap that removed the focused element (the pager link just used) would drop focus to <body>:
  // put it on the page's landing point instead (the audit log's results heading).
  document.addEventListener("htmx:afterSwap", function () {
    var active = document.activeElement;
    if (active && active !== document.body && document.contains(active)) return;
    var landing = document.querySelector("[data-focus-after-swap]");
    if (landing) landing.focus();
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
