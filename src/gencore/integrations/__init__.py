"""Framework integrations: thin optional modules over gencore's public API.

- :mod:`gencore.integrations.pytest_plugin`: a core when a test runs too long or crashes
  (a ``pytest11`` plugin, enabled with ``--gencore-dir``).
- :mod:`gencore.integrations.gunicorn`: server hooks; a core of a worker gunicorn times out.
- :mod:`gencore.integrations.celery`: a core of a pool child whose task passes its time limit.

gencore depends on none of these frameworks; each module imports its framework only when used.
"""


def deadline_before(limit: float) -> float:
    """Our deadline under someone else's time ``limit`` (pytest-timeout, a celery hard time
    limit): a margin earlier (20% of it, at least 1 s, at most 30 s; never less than half of
    it), so the core is written before the limit acts."""
    return max(limit - min(max(1.0, 0.2 * limit), 30.0), limit / 2)
