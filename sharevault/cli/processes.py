"""`sharevault serve` and `sharevault work`: the long-running processes."""

from __future__ import annotations

import logging
import os
import sys

import click
import uvloop

from sharevault import otel
from sharevault.cli.common import fail, settings_or_exit
from sharevault.config import Settings, mask_url
from sharevault.logs import setup_logging
from sharevault.service import create_app
from sharevault.service.server import serve as serve_app
from sharevault.service.supervisor import run_processes, stop_with_supervisor
from sharevault.worker import run_worker

log = logging.getLogger(__name__)


def _tracing(settings: Settings, service: str) -> None:
    if settings.otel and not otel.configure(service):
        log.warning("SHAREVAULT_OTEL is set but the `otel` extra is not installed; no tracing")


@click.command()
@click.option(
    "--access-log", is_flag=True, help="Log a line per request (off: it costs a tenth of the CPU)."
)
@click.option("--supervisor", type=int, default=None, hidden=True)
@click.pass_context
def serve(ctx: click.Context, access_log: bool, supervisor: int | None) -> None:
    """Run the gateway (HTTP) until SIGTERM/SIGINT, as SHAREVAULT_HTTP_PROCESSES processes."""
    # --supervisor PID (internal): this is one of the processes a `serve` of several started.
    settings = settings_or_exit("webhook_secret", "encryption_keys")
    logging_options: dict[str, str] = ctx.parent.params if ctx.parent is not None else {}
    level = logging_options.get("log_level", "INFO")
    fmt = logging_options.get("log_format", "auto")
    where = f"{settings.http_host}:{settings.http_port}, database {mask_url(settings.database_url)}"
    processes = gateway_processes(settings)
    if supervisor is None and processes > 1:
        options = ["--log-level", level, "--log-format", fmt]
        sys.exit(_serve_processes(processes, settings, where, options, access_log=access_log))
    if supervisor is None:
        log.info("gateway on %s", where)
    else:
        stop_with_supervisor(supervisor)
        setup_logging(level, fmt, with_pid=True)
    _tracing(settings, "sharevault-gateway")
    # uvloop: the event loop and socket writes are a third of the gateway's CPU per request.
    uvloop.run(
        serve_app(
            create_app(settings),
            settings.http_host,
            settings.http_port,
            reuse_port=supervisor is not None,
            access_log=access_log,
        )
    )


def gateway_processes(settings: Settings) -> int:
    """SHAREVAULT_HTTP_PROCESSES, or with 0 one per core available; one on a port the OS picks
    (several processes must share one known port)."""
    if settings.http_processes:
        return settings.http_processes
    return 1 if settings.http_port == 0 else max(1, len(os.sched_getaffinity(0)))


def _serve_processes(
    processes: int,
    settings: Settings,
    where: str,
    logging_options: list[str],
    *,
    access_log: bool,
) -> int:
    """Start `processes` gateway processes on the port and supervise them."""
    if settings.http_port == 0:
        fail(
            "configuration error: SHAREVAULT_HTTP_PORT must be set (not 0) when "
            "SHAREVAULT_HTTP_PROCESSES is above 1",
            2,
        )
    log.info("gateway on %s, in %d processes", where, processes)
    argv = [sys.executable, "-m", "sharevault", *logging_options, "serve"]
    argv += ["--supervisor", str(os.getpid()), *(["--access-log"] if access_log else [])]
    return run_processes(processes, argv, dict(os.environ))


@click.command()
def work() -> None:
    """Run a worker until SIGTERM/SIGINT; it finishes the batch in hand before exiting."""
    settings = settings_or_exit("encryption_keys")
    _tracing(settings, "sharevault-worker")
    uvloop.run(run_worker(settings))
