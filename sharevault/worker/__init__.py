"""The worker: consumes sealed shares from RabbitMQ and stores them in PostgreSQL."""

from sharevault.worker.consumer import ShareWorker
from sharevault.worker.run import open_worker, run_worker

__all__ = ["ShareWorker", "open_worker", "run_worker"]
