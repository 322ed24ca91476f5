"""Scheduled runs that find nothing to do end as skipped, with the reason in the task's log."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

from ml.core.errors import NothingToDo

log = logging.getLogger(__name__)


@contextmanager
def skip_when_idle() -> Iterator[None]:
    """Turn a NothingToDo raised inside into Airflow's skip: the task and those after it show as skipped."""
    try:
        yield
    except NothingToDo as reason:
        from airflow.sdk.exceptions import AirflowSkipException

        log.info("nothing to do: %s", reason)
        raise AirflowSkipException(str(reason)) from None
