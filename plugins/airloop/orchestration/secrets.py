"""Secrets kept in Airflow for processes that run outside a task: :func:`connection_password` takes an Airflow
Connection id and returns its password (the metadata DB, a secrets backend or an ``AIRFLOW_CONN_<ID>``
environment variable), used by ``airloop serve`` for its bearer token."""

from __future__ import annotations

from airloop.errors import BadInput


def connection_password(conn_id: str, where: str) -> str:
    """The password of Airflow Connection ``conn_id``; BadInput naming ``where`` (the setting that named it)
    when the connection does not exist or has no password."""
    from airflow.models.connection import Connection

    try:
        conn = Connection.get_connection_from_secrets(conn_id)
    except Exception as err:  # AirflowNotFoundException and friends; the id and the fix are what matter
        raise BadInput(
            f"{where}: no Airflow Connection {conn_id!r} ({type(err).__name__}); create it in the UI "
            f"(`airflow connections add {conn_id} --conn-type generic --conn-password <token>`) or set "
            f"AIRFLOW_CONN_{conn_id.upper()}"
        ) from None
    if not conn.password:
        raise BadInput(f"{where}: Airflow Connection {conn_id!r} has no password; expected the bearer token there")
    return conn.password
