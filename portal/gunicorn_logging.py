"""gunicorn's access log, without the query strings that carry sign-in secrets (gunicorn.conf.py
sets `logger_class`). The single sign-on callback arrives as `/oidc/callback/?code=…&state=…`: the
code is a one-time credential (PKCE makes a stolen one useless, but logs are copied widely), so
that path is logged without its query, whatever the log format asks for."""

from __future__ import annotations

import re

from gunicorn.glogging import Logger

HIDDEN = "[query hidden]"
_SECRET_QUERY_PATHS = re.compile(r"^/+oidc/+callback")


class AccessLogger(Logger):
    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        path = environ.get("PATH_INFO") or ""
        if _SECRET_QUERY_PATHS.match(path) and (environ.get("QUERY_STRING") or "?" in environ.get("RAW_URI", "")):
            atoms["r"] = f"{environ.get('REQUEST_METHOD')} {path}?{HIDDEN} {environ.get('SERVER_PROTOCOL')}"
            atoms["q"] = HIDDEN
            for key in ("{query_string}e", "{raw_uri}e", "{request_uri}e"):  # environ atoms, if asked for
                if key in atoms:
                    atoms[key] = HIDDEN
        return atoms
