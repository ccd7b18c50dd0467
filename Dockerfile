FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sharevault ./sharevault
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --system --uid 10001 sharevault
COPY --from=build /install /usr/local
USER sharevault
ENV SHAREVAULT_HTTP_HOST=0.0.0.0 \
    PYTHONUNBUFFERED=1
EXPOSE 8080
ENTRYPOINT ["sharevault"]
CMD ["serve"]
