"""A signed-in browser as htmx drives the portal, for the system tests and the benchmarks.

The one-time nonce and the CSRF token come from the page; POSTs carry `HX-Request: true` and
`X-CSRFToken`, as htmx 2 sends them (hx-headers on <body>).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import requests

from .harness import PASSWORD, TIMEOUT, new_http

_NONCE = re.compile(r'<input[^>]*name="nonce"[^>]*value="([^"]+)"')
_HTMX_CSRF = re.compile(r'"x-csrftoken": "([^"]+)"')
_LOGIN_CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
_ROW = re.compile(r'<tr id="key-(\d+)"[^>]*>\s*<td[^>]*>(?:<span>)?<a href="/keys/\d+/">([^<]*)</a>')
_ALERT = re.compile(r'role="alert"[^>]*>\s*(?:<p>)?([^<]{1,300})')


class PortalError(Exception):
    pass


@dataclass(frozen=True)
class Form:
    nonce: str
    csrf: str


class Client:
    """requests.Session as a browser with htmx uses the portal. Every response's headers are kept
    (`headers_seen`) so a sweep can look for the secret in headers and cookies too."""

    def __init__(self, base_url: str, http: requests.Session | None = None) -> None:
        self.base_url = base_url
        self.http = http or new_http()
        self.csrf = ""
        self.headers_seen: list[str] = []
        self.pages: tuple[str, ...] = ("/", "/keys/", "/keys/new/")  # what the leak sweep fetches

    def clone(self, base_url: str) -> Client:
        """The same signed-in browser talking to another instance (same database and SECRET_KEY)."""
        http = new_http()
        http.cookies.update(self.http.cookies)
        twin = Client(base_url, http)
        twin.csrf, twin.pages = self.csrf, self.pages
        return twin

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", TIMEOUT)
        kwargs.setdefault("allow_redirects", False)
        response = self.http.request(method, self.base_url + path, **kwargs)
        self.headers_seen.append("\n".join(f"{k}: {v}" for k, v in response.headers.items()))
        if match := _HTMX_CSRF.search(response.text):
            self.csrf = match.group(1)
        return response

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def sign_in(self, username: str, password: str = PASSWORD) -> Client:
        page = self.get("/accounts/login/")
        token = _LOGIN_CSRF.search(page.text)
        if page.status_code != 200 or not token:
            raise PortalError(f"sign-in page: HTTP {page.status_code}")
        response = self.request(
            "POST",
            "/accounts/login/",
            data={"username": username, "password": password, "csrfmiddlewaretoken": token.group(1), "next": ""},
        )
        if response.status_code != 302:
            raise PortalError(f"sign-in as {username} failed: HTTP {response.status_code}")
        return self

    def form(self) -> Form:
        """GET /keys/new/ as a browser does: a fresh one-time nonce and the CSRF token from the page."""
        page = self.get("/keys/new/")
        nonce, csrf = _NONCE.search(page.text), _HTMX_CSRF.search(page.text)
        if page.status_code != 200 or not nonce or not csrf:
            raise PortalError(f"form page: HTTP {page.status_code}")
        return Form(nonce.group(1), csrf.group(1))

    def mint(self, name: str, form: Form | None = None, monthly_limit: str = "5", **kwargs) -> requests.Response:
        """POST the form the way htmx 2 sends it (hx-post on the form, hx-headers from <body>)."""
        form = form or self.form()
        return self.request(
            "POST",
            "/keys/new/",
            data={
                "csrfmiddlewaretoken": form.csrf,
                "nonce": form.nonce,
                "name": name,
                "monthly_limit": monthly_limit,
                "manage": "none",
                "completions": "write",
            },
            headers=self._htmx("/keys/new/", form.csrf, target="mint"),
            **kwargs,
        )

    def keys(self) -> dict[str, int]:
        """The user's keys on /keys/: name -> pk."""
        page = self.get("/keys/")
        if page.status_code != 200:
            raise PortalError(f"/keys/: HTTP {page.status_code}")
        return {name: int(pk) for pk, name in _ROW.findall(page.text)}

    def revoke(self, pk: int, **kwargs) -> requests.Response:
        """The confirmation's POST, as htmx sends it from the list row."""
        if not self.csrf:
            self.get("/keys/")
        return self.request(
            "POST",
            f"/keys/{pk}/revoke/",
            data={"csrfmiddlewaretoken": self.csrf},
            headers=self._htmx("/keys/", self.csrf, target=f"key-{pk}"),
            **kwargs,
        )

    def _htmx(self, current: str, csrf: str, target: str) -> dict[str, str]:
        return {
            "HX-Request": "true",
            "HX-Target": target,
            "HX-Current-URL": self.base_url + current,
            "X-CSRFToken": csrf,
        }


def alert_text(response: requests.Response) -> str:
    """What the portal told the user (the first role="alert"), whitespace collapsed."""
    match = _ALERT.search(response.text)
    return " ".join(match.group(1).split()) if match else ""


def shows_secret(response: requests.Response) -> bool:
    return "data-secret" in response.text
