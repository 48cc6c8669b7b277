# One image for every gqlws process of docker-compose.yml: the Daphne edges,
# the Celery workers, the migration job, and (built with EXTRAS=distributed,test)
# the tests service. Everything runs from the repository root, /app.
FROM python:3.11-slim

# Extras of pyproject.toml to install; the tests service adds "test".
ARG EXTRAS=distributed

# PYTHONPATH: the example project (and the tests) are not installed packages,
# and Celery workers import them lazily, after the worker left its cwd-on-path
# window; every process finds them at the repository root.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app

WORKDIR /app

# The library and its metadata first: editing the example or the tests then
# reuses the layer with the dependencies installed.
COPY pyproject.toml README.md ./
COPY gqlws/ gqlws/
COPY broadcast/ broadcast/
COPY workers/ workers/
RUN pip install ".[${EXTRAS}]" "psycopg[binary]>=3.1" \
    && rm -rf build ./*.egg-info

COPY . .

# Files stay root's and read-only to the processes, which run unprivileged.
RUN useradd --create-home --shell /usr/sbin/nologin --uid 10001 gqlws
USER gqlws

EXPOSE 8000
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "example.asgi:application"]
