"""Local stand-ins for Google services that behave like the service: the BigQuery emulator
(PyPI ``bqemulator``, in its own virtualenv) and the Cloud Storage emulator (``gcp-storage-emulator``).

Both listen on 127.0.0.1 on a free port and stop with their context (tests, ``demo --bigquery``)
or in the foreground (``convergence emulator``).
"""
