"""gunicorn settings for the portal (read automatically from the working directory).

Threaded workers: a mint waits on Requesty for up to REQUESTY_CONNECT_TIMEOUT +
REQUESTY_READ_TIMEOUT seconds, and threads let other users' requests proceed meanwhile.
Measured in docs/performance.md.
"""

import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
# 4 x 16 rather than 2 x 32: each worker's threads share one GIL, and a thread holding the audit
# chain's lock must win it back for every round trip; 32 threads in one process made the lock
# queue and the mints wait (docs/performance.md). 4 workers on 2 vCPUs is not CPU-bound: a mint
# spends most of its time waiting on Requesty.
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
worker_class = "gthread"
# Per worker, not in total: a kept-alive connection stays with the worker that accepted it, so a
# worker needs threads for its share of a burst and some slack for an uneven split. Each thread
# may keep a PostgreSQL connection open for CONN_MAX_AGE: workers x threads (64) must fit the
# server's max_connections.
threads = int(os.environ.get("GUNICORN_THREADS", "16"))
# Must stay above the Requesty deadlines; `manage.py check --deploy` verifies it (keys.E002).
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = 30
keepalive = 5
max_requests = 2000
max_requests_jitter = 200
accesslog = "-"
errorlog = "-"
# The portal never puts secrets in URLs, but an identity provider does: the single sign-on
# callback's query (`?code=…&state=…`) is left out of the access log (portal/gunicorn_logging.py).
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
logger_class = "portal.gunicorn_logging.AccessLogger"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
wsgi_app = "portal.wsgi:application"
# gunicorn >= 25.1 opens a control socket at a fixed per-user path and unlinks whatever is there, so
# two instances run by one user take it from each other. The portal does not use gunicornc.
control_socket_disable = True
