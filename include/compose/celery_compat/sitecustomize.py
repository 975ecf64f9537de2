"""Compatibility shim, on PYTHONPATH of every Airflow process of the compose topology and its local test.

celery 5.7.0 (pinned by uv.lock) removed the ``retry`` decorator from ``celery.backends.database``; the newest
Airflow Celery provider (3.26.0) still imports it, so ``airflow celery worker`` and the CeleryExecutor fail at
import. This puts an equivalent decorator back when (and only when) that module is imported and lacks it.
Delete this folder once the lock pins ``celery<5.7`` or a provider release stops importing ``retry``
(tests/integration/test_topology.py says when).
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import logging
import sys

_MODULE = "celery.backends.database"


def _retry(fun):
    """Retry ``fun`` on SQLAlchemy database errors, ``max_retries`` (default 3) times in all (celery 5.6's)."""
    from sqlalchemy.exc import DatabaseError, InterfaceError, InvalidRequestError
    from sqlalchemy.orm.exc import StaleDataError

    retryable = (DatabaseError, InterfaceError, InvalidRequestError, StaleDataError)

    @functools.wraps(fun)
    def inner(*args, **kwargs):
        max_retries = kwargs.pop("max_retries", 3)
        for attempt in range(1, max_retries + 1):
            try:
                return fun(*args, **kwargs)
            except retryable:
                if attempt >= max_retries:
                    raise
                logging.getLogger(_MODULE).warning(
                    "Failed operation %s. Retrying %s more times.", fun.__name__, max_retries - attempt, exc_info=True
                )

    return inner


class _AddRetry(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the real loader of celery.backends.database to add ``retry`` after it runs."""

    def find_spec(self, name, path, target=None):
        if name != _MODULE:
            return None
        sys.meta_path.remove(self)  # one-shot: let the normal finders locate the module
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            if not hasattr(module, "retry"):
                module.retry = _retry

        spec.loader.exec_module = exec_and_patch
        return spec


if _MODULE not in sys.modules:
    sys.meta_path.insert(0, _AddRetry())
