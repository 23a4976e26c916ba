"""durable-tasks: durable workflows and chains for existing Celery tasks, journaled in SQL.

::

    from celery import Celery
    from durable_tasks import Durable, RetryPolicy

    app = Celery("shop", broker="redis://127.0.0.1:6379/0")
    durable = Durable(app)  # journal in durable.sqlite3, or store="postgresql+psycopg://..."

    @durable.step(retry=RetryPolicy(max_attempts=5))
    @app.task
    def charge_card(order_id: int) -> dict: ...

    durable.chain(charge_card.s(42), send_receipt.s()).start()
"""

from importlib.metadata import PackageNotFoundError, version

from .app import Durable
from .celery_chains import DurableAsyncResult
from .chain import ChainSleep, DurableChain
from .config import Settings
from .current import StepInfo, Tick, current_step
from .definitions import Workflow
from .errors import (
    ConfigurationError,
    DurableError,
    EventTimeoutError,
    EventTokenError,
    IdempotencyConflictError,
    InvalidStateError,
    NonDeterminismError,
    PayloadError,
    PayloadTooLargeError,
    ResultTimeoutError,
    RunCancelledError,
    RunNotFoundError,
    ScheduleNotFoundError,
    SchemaError,
    SerializationError,
    StepFailedError,
    StoreError,
    StoreUnavailableError,
    UnknownTaskError,
    UnknownWorkflowError,
    WorkerLostError,
    WorkflowFailedError,
)
from .events import EventReceipt
from .handle import AttemptRecord, RunHandle, RunRecord, StepRecord
from .retry import RetryPolicy
from .schedule_ops import ScheduleInfo
from .schedules import CatchUp, Overlap
from .vocabulary import EventDelivery, RunStatus, StepStatus
from .workflow import StepFuture, WorkflowContext

try:
    __version__ = version("durable-tasks")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "AttemptRecord",
    "CatchUp",
    "ChainSleep",
    "ConfigurationError",
    "Durable",
    "DurableAsyncResult",
    "DurableChain",
    "DurableError",
    "EventDelivery",
    "EventReceipt",
    "EventTimeoutError",
    "EventTokenError",
    "IdempotencyConflictError",
    "InvalidStateError",
    "NonDeterminismError",
    "Overlap",
    "PayloadError",
    "PayloadTooLargeError",
    "ResultTimeoutError",
    "RetryPolicy",
    "RunCancelledError",
    "RunHandle",
    "RunNotFoundError",
    "RunRecord",
    "RunStatus",
    "ScheduleInfo",
    "ScheduleNotFoundError",
    "SchemaError",
    "SerializationError",
    "Settings",
    "StepFailedError",
    "StepFuture",
    "StepInfo",
    "StepRecord",
    "StepStatus",
    "StoreError",
    "StoreUnavailableError",
    "Tick",
    "UnknownTaskError",
    "UnknownWorkflowError",
    "WorkerLostError",
    "Workflow",
    "WorkflowContext",
    "WorkflowFailedError",
    "__version__",
    "current_step",
]
