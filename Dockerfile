# One image for the Airflow services, the Celery workers, the MLflow server and `airloop serve` (docker-compose.yaml).
FROM apache/airflow:3.3.2-python3.11
USER root
RUN pip install --no-cache-dir uv==0.13.9 \
    && mkdir -p /opt/airloop /opt/airflow/auth /var/lib/mlflow-auth \
    && chown -R airflow:root /opt/airloop /opt/airflow/auth /var/lib/mlflow-auth \
    && chmod 0770 /opt/airflow/auth /var/lib/mlflow-auth
USER airflow
WORKDIR /opt/airloop
COPY --chown=airflow:root pyproject.toml uv.lock README.md ./
COPY --chown=airflow:root plugins ./plugins
# The locked dependencies, into the image's Python (the Airflow version is the one the lock pins).
# Flask-WTF is what `mlflow server --app-name airloop-basic-auth` (MLflow's basic-auth) needs beyond the lock (mlflow's `auth` extra).
RUN uv export --frozen --no-dev --no-emit-project -o /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && pip install --no-cache-dir "Flask-WTF>=1.2,<2" \
    && pip install --no-cache-dir --no-deps -e .
COPY --chown=airflow:root dags ./dags
COPY --chown=airflow:root include ./include
ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/airloop/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/airloop/plugins \
    AIRLOOP_PIPELINES_DIR=/opt/airloop/include/pipelines \
    AIRLOOP_SUITES_DIR=/opt/airloop/include/gx
