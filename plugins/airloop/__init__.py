"""Airloop: the closed machine-learning loop on Apache Airflow and MLflow.

Stage modules (ingest, validate, train, evaluate, registry, score, monitor, retrain) are pure Python:
they take DataFrames, URIs and a typed config and return values. DAG files in ``dags/`` only wire them.
"""

__version__ = "0.1.0"
