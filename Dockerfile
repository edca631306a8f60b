# syntax=docker/dockerfile:1
# Production image: gunicorn serving the portal, static files by WhiteNoise, non-root.
# Build: docker build -t key-portal .   Run: see docs/operations.md ("Docker").
# Never expose this container's port to clients directly: put a buffering reverse proxy in front
# (docs/examples/nginx.conf, tested by tests/test_reverse_proxy.py). gunicorn gives every connection
# a thread, and clients that send slowly hold those threads until the worker times out.

FROM python:3.13-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
RUN python -m venv /venv
COPY requirements.txt .
RUN /venv/bin/pip install -r requirements.txt
COPY manage.py gunicorn.conf.py ./
COPY portal portal
COPY keys keys
COPY templates templates
COPY static static
# Dummy values: collectstatic needs settings to load, not real secrets. They do not reach the image's environment.
RUN SECRET_KEY=collectstatic-only-not-a-secret REQUESTY_ADMIN_TOKEN=collectstatic-only AUDIT_HMAC_KEY=collectstatic-only STATIC_ROOT=/app/staticfiles /venv/bin/python manage.py collectstatic --noinput

FROM python:3.13-slim
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 STATIC_ROOT=/app/staticfiles GUNICORN_BIND=0.0.0.0:8000
RUN useradd --system --uid 10001 --no-create-home --home-dir /app portal
COPY --from=build /venv /venv
COPY --from=build /app /app
WORKDIR /app
USER 10001
# For the reverse proxy only (docs/examples/nginx.conf), never for clients.
EXPOSE 8000
LABEL org.opencontainers.image.description="Requesty key portal (gunicorn). Serve it only behind a buffering reverse proxy: docs/examples/nginx.conf."
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
CMD ["gunicorn", "-c", "gunicorn.conf.py"]
