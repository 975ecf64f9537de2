-- The Airflow database is created by the postgres image (POSTGRES_DB); MLflow gets its own.
CREATE DATABASE mlflow;
