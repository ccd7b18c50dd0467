"""The worker: consumes sealed shares from RabbitMQ and stores them in PostgreSQL."""

from sharevault.worker.consumer import ShareWorker
from sharevault.worker.run import run_worker

__all__ = ["ShareWorker", "run_worker"]
