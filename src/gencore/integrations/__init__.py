"""Framework integrations: thin optional modules over gencore's public API.

- :mod:`gencore.integrations.pytest_plugin`: a core when a test runs too long or crashes
  (a ``pytest11`` plugin, enabled with ``--gencore-dir``).
- :mod:`gencore.integrations.gunicorn`: server hooks; a core of a worker gunicorn times out.
- :mod:`gencore.integrations.celery`: a core of a pool child whose task passes its time limit.

gencore depends on none of these frameworks; each module imports its framework only when used.
"""
