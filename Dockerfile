FROM python:3.11-slim
RUN pip install --no-cache-dir uv && useradd --uid 10001 --create-home mailroom
WORKDIR /app
COPY . .
RUN uv sync --frozen --no-dev && chown -R mailroom /app
ENV PATH=/app/.venv/bin:$PATH
USER 10001
EXPOSE 8080
ENTRYPOINT []
CMD ["mailroom", "run", "all"]
