"""``convergence doctor``: check the deployed project from the identity this process runs as.

Run it where the launcher runs, or with Application Default Credentials impersonating
``convergence-launcher``: ``testIamPermissions`` only ever answers for its caller. It reads the
launcher's settings from the environment (what Cloud Run gives the service), prints one line per
problem and exits 1, or prints ``ok: N checks, 0 problems`` and exits 0.
"""
from __future__ import annotations

import argparse
import logging
import os

from beam_pipelines.ops.doctor import describe, format_problems, run_doctor

log = logging.getLogger(__name__)
ROOT_KEY_VARIABLES = ("CA_ROOT_API_KEY_SECRET", "CA_ROOT_API_KEY")


def add_doctor_parser(sub) -> argparse.ArgumentParser:
    """Add ``doctor`` to the top-level subcommands."""
    return sub.add_parser("doctor", help="check the deployed project (IAM, root key, templates, Scheduler jobs,"
                                         " metastore SQL): one line per problem, exit 1 if any")


def launcher_settings(settings):
    """The launcher's settings as the service reads them at start-up.

    Reading them resolves the root key. When that fails (no version, no access), the rest is read
    without it: the doctor's root-key check reads the secret itself and says why, and every other
    check still runs."""
    from launcher.settings import LauncherSettings

    try:
        return LauncherSettings.from_env(settings)
    except Exception as exc:  # noqa: BLE001 - ConvergenceError, or google.auth's when there is no credential
        log.warning("launcher settings read without the root key: %s", describe(exc))
    saved = {name: os.environ.pop(name) for name in ROOT_KEY_VARIABLES if name in os.environ}
    try:
        return LauncherSettings.from_env(settings)
    finally:
        os.environ.update(saved)


def run_doctor_cli(args, settings, *, session=None, endpoints=None, storage_client=None, bigquery_client=None) -> int:
    """Print the problems (or the ok line); 1 when there are problems. The keyword arguments replace
    the Google clients (tests point them at loopback servers and emulators)."""
    secret = os.environ.get("CA_ROOT_API_KEY_SECRET", "").strip() or None
    problems = run_doctor(settings, launcher_settings(settings), session, endpoints, storage_client, bigquery_client,
                          root_key_secret=secret)
    print(format_problems(problems))
    return 1 if problems else 0
