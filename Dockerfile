# The base image is pinned by digest, so that a build today and a build next month start from the
# same bytes (`docker compose build` needs no registry look-up for it). To move to a newer
# python:3.11-slim: `docker buildx imagetools inspect python:3.11-slim` (or `docker pull
# python:3.11-slim && docker inspect --format '{{index .RepoDigests 0}}' python:3.11-slim`), put
# the digest it prints below, rebuild, run the tests.
ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/sharevault
WORKDIR /src
# Every dependency, and the build backend, from the hashed pins of requirements.lock (scripts/lock):
# pip refuses anything whose hash differs, or that is not pinned.
COPY requirements.lock ./
RUN /opt/sharevault/bin/pip install --require-hashes --only-binary=:all: -r requirements.lock
COPY pyproject.toml README.md ./
COPY sharevault ./sharevault
# The package alone: its dependencies are in already, and it builds with the pinned setuptools.
RUN /opt/sharevault/bin/pip install --no-deps --no-build-isolation . \
    && /opt/sharevault/bin/pip uninstall --yes setuptools

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 sharevault
COPY --from=build /opt/sharevault /opt/sharevault
COPY deploy/entrypoint.sh /usr/local/bin/sharevault-entrypoint
USER sharevault
ENV PATH=/opt/sharevault/bin:$PATH \
    SHAREVAULT_HTTP_HOST=0.0.0.0 \
    PYTHONUNBUFFERED=1
EXPOSE 8080
# Reads SHAREVAULT_*_FILE secrets (Docker secrets, compose.yaml), then runs `sharevault "$@"`.
ENTRYPOINT ["sharevault-entrypoint"]
CMD ["serve"]
