# support-relay: HTTP API, SMTP server and delivery worker in one image.
#   docker build -t support-relay .
#   docker run --rm -p 8080:8080 -p 2525:2525 \
#     -e RELAY_HTTP_HOST=0.0.0.0 -e RELAY_SMTP_HOST=0.0.0.0 support-relay
# docker-compose.yml runs it against PostgreSQL with Mailpit as the smarthost.

# Build stage: `pip install .` goes through a wheel; build it here so the runtime image holds
# neither the source tree nor the build backend. The wheel carries templates/ as
# relay/_templates (see [tool.hatch.build.targets.wheel.force-include] in pyproject.toml).
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api ./api
COPY relay ./relay
COPY storage ./storage
COPY templates ./templates
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels \
    && useradd --system --create-home --home-dir /var/lib/support-relay --uid 10001 relay \
    && mkdir -p /var/lib/support-relay/var \
    && chown -R relay:relay /var/lib/support-relay
# Working directory of the embedded defaults (./var/relay.db, maildir:./var/outbox) when no
# RELAY_DATABASE_URL / RELAY_OUTBOUND is given; mount a volume here to keep them.
WORKDIR /var/lib/support-relay
USER relay
EXPOSE 8080 2525
ENTRYPOINT ["support-relay"]
CMD ["serve"]
