"""The public surface changes only on purpose."""

import durable_tasks

EXPECTED = [
    "AttemptRecord", "CatchUp", "ChainSleep", "ConfigurationError", "Durable", "DurableAsyncResult", "DurableChain",
    "DurableError",
    "EventDelivery", "EventReceipt", "EventTimeoutError", "EventTokenError", "IdempotencyConflictError",
    "InvalidStateError", "NonDeterminismError", "Overlap", "PayloadError", "PayloadTooLargeError",
    "ResultTimeoutError", "RetryPolicy", "RunCancelledError", "RunHandle", "RunNotFoundError", "RunRecord",
    "RunStatus", "ScheduleInfo", "ScheduleNotFoundError", "SchemaError", "SerializationError", "Settings",
    "StepFailedError", "StepFuture", "StepInfo", "StepRecord", "StepStatus", "StoreError", "StoreUnavailableError",
    "Tick", "UnknownTaskError", "UnknownWorkflowError", "WorkerLostError", "Workflow", "WorkflowContext",
    "WorkflowFailedError", "__version__", "current_step",
]


def test_exports_are_pinned() -> None:
    assert durable_tasks.__all__ == EXPECTED


def test_every_export_exists_and_is_documented() -> None:
    for name in durable_tasks.__all__:
        value = getattr(durable_tasks, name)
        if callable(value):
            assert value.__doc__, f"{name} has no docstring"


def test_errors_share_one_root_and_suspension_escapes_except_exception() -> None:
    from durable_tasks import errors

    for name in dir(errors):
        value = getattr(errors, name)
        if isinstance(value, type) and issubclass(value, Exception) and value.__module__ == errors.__name__:
            assert issubclass(value, errors.DurableError), name
    assert not issubclass(errors.Suspend, Exception)
