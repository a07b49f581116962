# keyferry provider image. Build: docker build -t keyferry:0.1.0 .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY provider ./provider
RUN pip install --no-cache-dir --prefix=/install '.[all]'

FROM python:3.11-slim
COPY --from=build /install /usr/local
USER 0:0
ENTRYPOINT ["keyferry"]
CMD ["serve"]
