# syntax=docker/dockerfile:1
# llm-grpc gateway. Build: docker build -t llm-grpc .   Run: docker run -p 50051:50051 -e OPENAI_API_KEY=... llm-grpc

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY llm_grpc ./llm_grpc
COPY server ./server
# Wheels for the project and its runtime dependencies only (no dev tools reach the final image).
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LLM_LOG_FORMAT=json
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin llm
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels /wheels/*.whl && rm -rf /wheels
USER 10001
# 50051: gRPC (llm.v1.LLMService, grpc.health.v1, reflection). 9464: reserved for Prometheus metrics.
EXPOSE 50051 9464
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["llm-gateway", "health", "--target", "127.0.0.1:50051"]
# Exec form: SIGTERM reaches the server, which drains in-flight calls before it exits.
ENTRYPOINT ["llm-gateway", "serve", "--host", "0.0.0.0", "--port", "50051"]
