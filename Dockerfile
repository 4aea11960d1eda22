# One image for both roles:
#   receiver: docker run IMAGE                       (default: veo-archiver serve on :8000)
#   worker:   docker run IMAGE veo-archiver worker
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY veo_archiver ./veo_archiver
COPY receiver ./receiver
COPY workers ./workers
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# uid and gid 10001: the Kubernetes manifests run as runAsUser/runAsGroup 10001
RUN groupadd --system --gid 10001 archiver \
 && useradd --system --uid 10001 --gid archiver --home-dir /app --create-home archiver
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# numeric, so Kubernetes (runAsNonRoot) can check it is not root without reading /etc/passwd
USER 10001:10001
WORKDIR /app
ENV PYTHONUNBUFFERED=1 LOG_FORMAT=json
EXPOSE 8000
CMD ["veo-archiver", "serve", "--host", "0.0.0.0", "--port", "8000"]
