"""The exceptions durable-tasks raises.

Every error derives from :class:`DurableError`; messages say what happened, to which run and step, and
what to do about it::

    DurableError
    ├── ConfigurationError          bad arguments, unknown option, missing extra
    ├── StoreError                  the database cannot be used
    │   ├── StoreUnavailableError   cannot connect
    │   └── SchemaError             tables missing or at an older migration
    ├── UnknownWorkflowError        no workflow registered under that name
    ├── UnknownTaskError            a step names a Celery task no one registered
    ├── RunNotFoundError            no run with that id
    ├── ScheduleNotFoundError       no schedule with that name
    ├── IdempotencyConflictError    a key already names another start (other workflow or input)
    ├── PayloadError                a value cannot be journaled
    │   ├── SerializationError      JSON cannot encode it (names run, step and type)
    │   └── PayloadTooLargeError    bigger than ``max_payload_bytes``
    ├── NonDeterminismError         the workflow code changed under a running run
    ├── InvalidStateError           an operation that the run's status does not allow
    ├── StepFailedError             a step failed for good (raised inside the workflow)
    │   └── EventTimeoutError       no event arrived within ``ctx.wait_for_event``'s timeout
    ├── EventTokenError             an approval token is malformed, tampered with, expired or used already
    ├── WorkflowFailedError         ``handle.result()`` of a run that failed
    ├── RunCancelledError           ``handle.result()`` of a cancelled run
    ├── WorkerLostError             a step's worker died (journaled as a ``lost`` attempt)
    └── ResultTimeoutError          ``handle.result(timeout=...)`` ran out of time

Control flow that is not an error (a run suspending until a step finishes) uses :class:`Suspend`, which
derives from :class:`BaseException` so that a user's ``except Exception`` cannot swallow it.
"""

from __future__ import annotations


class DurableError(Exception):
    """Root of every error raised by durable-tasks."""


class ConfigurationError(DurableError):
    """The library was configured with values it cannot use."""


class StoreError(DurableError):
    """The journal database cannot be used."""


class StoreUnavailableError(StoreError):
    """The journal database cannot be reached."""


class SchemaError(StoreError):
    """The journal tables are missing or older than this version of the library."""


class UnknownWorkflowError(DurableError):
    """A run names a workflow that is not registered in this process."""


class UnknownTaskError(DurableError):
    """A step names a Celery task that is not registered in this process."""


class RunNotFoundError(DurableError):
    """No run has the given id."""


class ScheduleNotFoundError(DurableError):
    """No schedule has the given name."""


class IdempotencyConflictError(DurableError):
    """An idempotency key already belongs to a run of another workflow, or with other input.

    ``run_id`` is the existing run.
    """

    def __init__(self, message: str, *, run_id: str) -> None:
        super().__init__(message)
        self.run_id = run_id


class PayloadError(DurableError):
    """A value cannot be journaled."""


class SerializationError(PayloadError):
    """A value cannot be encoded as JSON."""


class PayloadTooLargeError(PayloadError):
    """An encoded value is larger than ``max_payload_bytes``."""


class NonDeterminismError(DurableError):
    """The workflow asked for a different step than the journal recorded at that position."""


class InvalidStateError(DurableError):
    """The run's status does not allow the operation."""


class StepFailedError(DurableError):
    """A step failed for good; raised inside the workflow where the step was awaited.

    ``error_type`` and ``error_message`` describe the original exception, which ran in another process.
    """

    def __init__(self, message: str, *, step_key: str, error_type: str, error_message: str) -> None:
        super().__init__(message)
        self.step_key = step_key
        self.error_type = error_type
        self.error_message = error_message


class EventTimeoutError(StepFailedError, TimeoutError):
    """No event arrived within the timeout of ``ctx.wait_for_event``; raised inside the workflow.

    Catch it to take the timeout branch. A payload may be ``None``, so a timeout is never a return value.
    ``event`` is the event's name, ``key`` the wait's correlation key, ``timeout`` the seconds it waited.
    Left uncaught, it parks the run as ``failed``; ``durable runs resume`` then waits again, with a fresh
    timeout.
    """

    def __init__(self, message: str, *, step_key: str, event: str, key: str | None, timeout: float | None) -> None:
        super().__init__(message, step_key=step_key, error_type=f"{__name__}.EventTimeoutError",
                         error_message=message)
        self.event = event
        self.key = key
        self.timeout = timeout


class EventTokenError(DurableError):
    """An event token was refused: malformed, signed with another secret or altered, expired, or used already.

    ``reason`` is one of ``malformed``, ``tampered``, ``expired``, ``used``. Nothing was delivered.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class WorkflowFailedError(DurableError):
    """The run finished as ``failed``; raised by ``RunHandle.result()``."""

    def __init__(self, message: str, *, run_id: str, error: dict[str, object] | None) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.error = error or {}


class RunCancelledError(DurableError):
    """The run was cancelled; raised by ``RunHandle.result()``."""


class WorkerLostError(DurableError):
    """The worker running a step died (its heartbeat stopped); recorded as a ``lost`` attempt."""


class ResultTimeoutError(DurableError, TimeoutError):
    """``RunHandle.result(timeout=...)`` ran out of time before the run finished."""


class Suspend(BaseException):
    """Raised inside a workflow to stop replay until the journal changes.

    Derives from ``BaseException`` on purpose: a workflow's ``except Exception`` must not swallow it.
    Never raise or catch it yourself.
    """

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind
        """The kind of step the run waits for (``task``, ``sleep``, ...)."""
