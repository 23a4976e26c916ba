import pytest

from durable_tasks import PayloadTooLargeError, SerializationError
from durable_tasks.serialization import dumps, loads


def test_round_trip_is_compact_json() -> None:
    assert dumps({"a": [1, 2.5, None, True]}, what="x") == '{"a":[1,2.5,null,true]}'
    assert loads(dumps({"a": (1, 2)}, what="x")) == {"a": [1, 2]}
    assert loads(None) is None


def test_unencodable_value_names_the_place_and_the_type() -> None:
    class Money:
        pass

    with pytest.raises(SerializationError) as error:
        dumps({"payment": {"amount": Money()}}, what="result of step 'charge' in run r1")
    message = str(error.value)
    assert "result of step 'charge' in run r1" in message
    assert "value['payment']['amount']" in message and "Money" in message


def test_nan_is_refused() -> None:
    with pytest.raises(SerializationError):
        dumps(float("nan"), what="x")


def test_too_large_payload_names_the_limit() -> None:
    with pytest.raises(PayloadTooLargeError, match="over the limit of 100 bytes"):
        dumps("x" * 200, what="arguments of step 's'", max_bytes=100)
