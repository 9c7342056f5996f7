# The promptreg CLI (its demo and `promptreg serve`) in a small image; docker-compose.yml runs both.
FROM python:3.11.9-slim-bookworm
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md requirements.lock ./
COPY registry ./registry
COPY client ./client
COPY promptreg/__init__.py promptreg/py.typed ./promptreg/
RUN pip install -c requirements.lock ".[demo,postgres,serve]"
COPY examples ./examples
RUN useradd --create-home promptreg && chown promptreg:promptreg /app
USER promptreg
# The working directory must be writable: the default registry is ./.promptreg/registry.json.
CMD ["promptreg", "demo"]
