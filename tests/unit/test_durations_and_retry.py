from datetime import timedelta

import pytest

from durable_tasks import ConfigurationError, RetryPolicy, SerializationError
from durable_tasks.durations import parse_duration
from durable_tasks.retry import from_celery_options


@pytest.mark.parametrize(("text", "seconds"), [
    ("30 days", 30 * 86400), ("1h30m", 5400), ("90", 90), (2.5, 2.5), ("250ms", 0.25),
    (timedelta(minutes=2), 120), ("2 weeks", 1209600),
])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["soon", "3 fortnights", "", "-5", "1h soon"])
def test_bad_durations_say_what_to_write(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="duration"):
        parse_duration(bad)


def test_exponential_backoff_with_cap_and_no_jitter() -> None:
    policy = RetryPolicy(max_attempts=10, initial="1s", maximum="5s", jitter=0)
    assert [policy.delay(n) for n in range(1, 6)] == [1, 2, 4, 5, 5]
    assert RetryPolicy(max_attempts=3, backoff="fixed", initial=3, jitter=0).delay(3) == 3


def test_jitter_stays_within_its_fraction() -> None:
    policy = RetryPolicy(max_attempts=3, initial=10, jitter=0.2)
    assert all(8 <= policy.delay(1) <= 12 for _ in range(200))


def test_retry_decisions() -> None:
    policy = RetryPolicy(max_attempts=3, dont_retry=(KeyError,))
    assert policy.should_retry(1, ValueError())
    assert not policy.should_retry(3, ValueError()), "the third attempt was the last"
    assert not policy.should_retry(1, KeyError())
    assert not policy.should_retry(1, SerializationError("x")), "a bad result never gets better"
    only = RetryPolicy(max_attempts=3, retry_on=(ConnectionError,))
    assert only.should_retry(1, ConnectionRefusedError()) and not only.should_retry(1, ValueError())


def test_policy_survives_json_with_exception_names_matched_through_the_mro() -> None:
    policy = RetryPolicy.from_json(RetryPolicy(max_attempts=4, retry_on=(OSError,), initial=2).to_json())
    assert policy.max_attempts == 4 and policy.initial == 2
    assert policy.should_retry(1, ConnectionResetError())
    assert not policy.should_retry(1, ValueError())
    assert RetryPolicy.from_json(None).max_attempts == 1


@pytest.mark.parametrize("kwargs", [{"max_attempts": 0}, {"backoff": "linear"}, {"jitter": 2}])
def test_invalid_policies_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_celery_autoretry_options_become_a_policy() -> None:
    class Task:
        autoretry_for = (ConnectionError,)
        max_retries = 4
        retry_backoff = 2
        retry_backoff_max = 60
        retry_jitter = False

    policy = from_celery_options(Task())
    assert policy is not None
    assert policy.max_attempts == 5 and policy.backoff == "exponential" and policy.initial == 2
    assert policy.maximum == 60 and policy.jitter == 0
    assert policy.should_retry(1, ConnectionError()) and not policy.should_retry(1, ValueError())

    class Plain:
        autoretry_for = ()

    assert from_celery_options(Plain()) is None
