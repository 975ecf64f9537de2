# One image for the Airflow services, the Celery workers and `airloop serve`.
FROM apache/airflow:3.3.2-python3.11
USER root
RUN pip install --no-cache-dir uv==0.13.9
USER airflow
WORKDIR /opt/airloop
COPY --chown=airflow:root pyproject.toml uv.lock README.md ./
COPY --chown=airflow:root plugins ./plugins
# Install the locked dependencies into the image's Python (the Airflow version is the one the lock pins).
RUN uv export --frozen --no-dev --no-emit-project -o /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && pip install --no-cache-dir --no-deps -e .
COPY --chown=airflow:root dags ./dags
COPY --chown=airflow:root include ./include
ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/airloop/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/airloop/plugins \
    AIRLOOP_PIPELINES_DIR=/opt/airloop/include/pipelines \
    AIRLOOP_SUITES_DIR=/opt/airloop/include/gx
