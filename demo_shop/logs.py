"""Log filters of the demo: the periodic tasks' routine Celery lines stay out of its output."""

import logging

from tiktok_tracking.schedule import periodic_tasks

# Beat's "Sending due task ... (tiktok_tracking.sweep_outbox)" and the worker's "Task
# tiktok_tracking.sweep_outbox[...] received" and "... succeeded" lines name the task so.
ROUTINE_TASKS = frozenset(task for _, task in periodic_tasks().values())


class RoutineTaskLines(logging.Filter):
    """Drops Celery's INFO lines about each run of a periodic task (the outbox sweep runs every
    10 s in the demo). Warnings and errors about them pass, and so does every line about other
    tasks: a delivery or a gateway webhook is worth seeing."""

    def filter(self, record):
        if record.levelno >= logging.WARNING:
            return True
        message = record.getMessage()
        return not any(task in message for task in ROUTINE_TASKS)
