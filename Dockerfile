# The stream-al engine image: `docker run stream-al run -c /app/config/stream-al.yaml`.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream_al ./stream_al
RUN pip install --no-cache-dir . && useradd --create-home stream-al && mkdir -p /app/state /app/review && chown stream-al /app/state /app/review
COPY config ./config
USER stream-al
# 9108: the engine's /metrics, /livez, /readyz; 8088: the review app (`stream-al review`)
EXPOSE 9108 8088
ENTRYPOINT ["stream-al"]
CMD ["run", "--config", "/app/config/compose.yaml"]
