# syntax=docker/dockerfile:1
# cloudmfa's image: docs/deployment.md says how it is built, run and checked.
#   docker build -t cloudmfa .
#   docker run --rm -p 8000:8000 -e CLOUDMFA_DATABASE_URL=… -e CLOUDMFA_REDIS_URL=… \
#     -e CLOUDMFA_SECRET_KEYS=… cloudmfa
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
# WEB UI BUILD STAGE (placeholder). The React + TypeScript front end in web/ is being built
# separately; once it lands, uncomment this stage and the COPY marked "WEB UI" in the runtime
# stage below, and point the service at the copied files as web/'s README says.
#
# FROM node:20-bookworm-slim AS web
# WORKDIR /web
# COPY web/package.json web/package-lock.json ./
# RUN npm ci --no-audit --no-fund
# COPY web/ ./
# RUN npm run build
# ---------------------------------------------------------------------------------------------

# Build: the package and its dependencies into a virtual environment, which alone moves on.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/cloudmfa
WORKDIR /src
# Every dependency ships wheels for this platform: no compiler is needed.
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN /opt/cloudmfa/bin/pip install --no-compile /src

# Runtime: the interpreter, the virtual environment, an unprivileged user; no build tools.
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="cloudmfa" \
      org.opencontainers.image.description="A multi-factor authentication service" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric id, so that Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
RUN groupadd --system --gid 10001 cloudmfa \
 && useradd --system --uid 10001 --gid cloudmfa --no-create-home \
      --home-dir /var/lib/cloudmfa --shell /usr/sbin/nologin cloudmfa \
 && install -d -o cloudmfa -g cloudmfa -m 0700 /var/lib/cloudmfa
COPY --from=build /opt/cloudmfa /opt/cloudmfa
# WEB UI: COPY --from=web /web/dist /opt/cloudmfa/web
ENV PATH=/opt/cloudmfa/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CLOUDMFA_DATA_DIR=/var/lib/cloudmfa
USER 10001:10001
WORKDIR /var/lib/cloudmfa
EXPOSE 8000
# /healthz answers while the process lives; the image has no curl, so Python asks.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["cloudmfa"]
# Listen on every interface of the container; the workers default to 2 on PostgreSQL.
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
