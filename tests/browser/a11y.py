"""axe-core and layout checks for the browser tests (issue 13).

axe-core comes from npm, pinned in tests/browser/axe/package-lock.json (`npm ci` there: .ci/run and
`make test` do it). It is put into the page through the DevTools protocol (`page.evaluate`), which
the page's Content Security Policy does not govern: the portal's CSP stays exactly as production
sends it (the context is never made with `bypass_csp`; test_a11y checks an inline script is still
refused). Each check runs at 1280 px and at 390 px (no word broken across lines at either), where the page
must not scroll sideways either."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page

AXE = Path(__file__).parent / "axe" / "node_modules" / "axe-core" / "axe.min.js"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

RUN_AXE = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations.map(v => `${v.id} (${v.impact}): ${v.help} at ` +
    v.nodes.slice(0, 3).map(n => n.target.join(" ")).join(", "));
}"""

OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  const wide = [...document.querySelectorAll("body *")].filter(el => {
    const box = el.getBoundingClientRect();
    return box.width && box.right > width + 1 && !el.closest(".table-wrap, .visually-hidden, .skip-link");
  });
  return {scroll: document.documentElement.scrollWidth, width,
          wide: wide.slice(0, 5).map(el => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + "." + el.className)};
}"""


# Words split across lines ("Revok/e"): each word's pieces must share one line. Identifiers (code),
# the secret and hidden text may break anywhere; hyphens and slashes are break points anyway.
BROKEN_WORDS = r"""() => {
  const skip = "code, pre, .secret, svg, .visually-hidden, .skip-link, script, style, option";
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const broken = [];
  for (let node = walker.nextNode(); node && broken.length < 5; node = walker.nextNode()) {
    if (!node.parentElement || node.parentElement.closest(skip)) continue;
    for (const match of node.textContent.matchAll(/[^\s\-\/\u2013\u2014,]{2,}/g)) {
      const range = document.createRange();
      range.setStart(node, match.index);
      range.setEnd(node, match.index + match[0].length);
      const tops = new Set([...range.getClientRects()].filter(r => r.width).map(r => Math.round(r.top)));
      if (tops.size > 1) { broken.push(match[0]); break; }
    }
  }
  return broken;
}"""


def axe_source() -> str:
    if not AXE.is_file():
        pytest.fail(
            f"axe-core is missing at {AXE}: run `npm ci` in tests/browser/axe (make test and .ci/run do).",
            pytrace=False,
        )
    return AXE.read_text()


def violations(page: Page) -> list[str]:
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(axe_source())
    return page.evaluate(RUN_AXE)


def broken_words(page: Page) -> list[str]:
    found = page.evaluate(BROKEN_WORDS)
    return [f"words broken across lines: {found}"] if found else []


def overflow(page: Page) -> list[str]:
    found = page.evaluate(OVERFLOW)
    if found["scroll"] <= found["width"]:
        return []
    return [f"scrolls sideways at {found['width']} px (page is {found['scroll']} px wide): {found['wide']}"]


class Checker:
    """Collects every problem of every page and state, so one run reports them all."""

    def __init__(self, page: Page):
        self.page = page
        self.problems: list[str] = []

    def __call__(self, state: str) -> None:
        page = self.page
        page.wait_for_load_state()
        for name, size in (("1280 px", DESKTOP), ("390 px", PHONE)):
            page.set_viewport_size(size)
            found = violations(page) + broken_words(page) + (overflow(page) if size is PHONE else [])
            self.problems += [f"{state} at {name}: {problem}" for problem in found]
        page.set_viewport_size(DESKTOP)

    def assert_clean(self) -> None:
        assert not self.problems, "\n".join(self.problems)
