# The seatlock API. Redis and PostgreSQL come from docker-compose.yml (SEATLOCK_*_URL), so the
# embedded servers (the "embedded" extra) are not installed here.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY seatlock seatlock
COPY api api
COPY db db
COPY lua lua
RUN pip install . && useradd --system --uid 10001 --home-dir /data seatlock \
    && mkdir -p /data && chown seatlock /data

USER seatlock
ENV SEATLOCK_HOST=0.0.0.0 SEATLOCK_PORT=8000 SEATLOCK_DATA_DIR=/data
EXPOSE 8000
# Workers: one per core unless SEATLOCK_WORKERS is set. SIGTERM stops uvicorn gracefully.
CMD ["seatlock", "serve"]
