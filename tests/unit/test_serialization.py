import math
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from kombu.utils import json as kombu_json

from durable_tasks import PayloadTooLargeError, SerializationError, serialization
from durable_tasks.serialization import dumps, loads

BERLIN = ZoneInfo("Europe/Berlin")
TYPED_VALUES = [
    datetime(2024, 5, 1, 9, 30, 15, 123456),  # naive stays naive
    datetime(2024, 5, 1, 9, 30, 15, 123456, tzinfo=UTC),
    datetime(2024, 12, 24, 18, 0, tzinfo=timezone(timedelta(hours=-3, minutes=-30))),
    date(2024, 2, 29),
    time(23, 59, 59, 999999),
    time(8, 15, tzinfo=timezone(timedelta(hours=5, minutes=45))),
    Decimal("1.10"),
    Decimal("-0.000000000000000000000000000001"),
    Decimal("1E+3"),
    Decimal("12345678901234567890.123456789012345678901234567890"),
    uuid.UUID("3f2c9a4e-1b7d-4c8e-9f00-0123456789ab"),
    b"plain ascii",
    "päyload".encode(),
    bytes(range(256)),  # not UTF-8: Celery's base64 marker
    b"",
]


def test_round_trip_is_compact_json() -> None:
    assert dumps({"a": [1, 2.5, None, True]}, what="x") == '{"a":[1,2.5,null,true]}'
    assert loads(dumps({"a": (1, 2)}, what="x")) == {"a": [1, 2]}
    assert loads(None) is None


@pytest.mark.parametrize("value", TYPED_VALUES, ids=repr)
def test_celery_json_types_come_back_with_the_same_type_and_value(value: Any) -> None:
    back = loads(dumps(value, what="x"))
    assert type(back) is type(value) and back == value
    assert str(back) == str(value)  # Decimal keeps its exponent and trailing zeros, times their offset
    if isinstance(value, datetime | time):
        assert back.utcoffset() == value.utcoffset()  # naive stays naive, aware keeps its offset


def test_nested_typed_values_round_trip_inside_dicts_lists_and_tuples() -> None:
    value = {"order": {"at": TYPED_VALUES[1], "lines": [(Decimal("9.99"), b"\x00\xff"), [date(2024, 1, 1)]]},
             "id": TYPED_VALUES[10]}
    assert loads(dumps(value, what="x")) == {
        "order": {"at": TYPED_VALUES[1], "lines": [[Decimal("9.99"), b"\x00\xff"], [date(2024, 1, 1)]]},
        "id": TYPED_VALUES[10]}


def test_zoneinfo_datetime_keeps_its_instant_and_offset_but_not_the_zone_name() -> None:
    # Celery's format writes an ISO offset, not a zone key: the value comes back with a fixed offset.
    value = datetime(2024, 7, 1, 12, 0, tzinfo=BERLIN)
    back = loads(dumps(value, what="x"))
    assert back == value and back.utcoffset() == timedelta(hours=2) and back.tzinfo == timezone(timedelta(hours=2))


def test_format_is_celerys_own_json_both_ways() -> None:
    value = {"at": TYPED_VALUES[2], "amount": Decimal("10.50"), "id": TYPED_VALUES[10], "raw": bytes(range(8))}
    assert kombu_json.loads(dumps(value, what="x")) == value
    assert loads(kombu_json.dumps(value)) == value


def test_types_registered_with_kombu_are_carried_too() -> None:
    class Point:
        def __init__(self, x: int, y: int) -> None:
            self.x, self.y = x, y

    # Registered for good in kombu's process-wide registry; the class exists only in this test.
    kombu_json.register_type(Point, "test_serialization.Point", lambda p: [p.x, p.y], lambda v: Point(*v))
    back = loads(dumps({"p": Point(3, 4)}, what="x"))["p"]
    assert isinstance(back, Point) and (back.x, back.y) == (3, 4)


def test_objects_with_json_method_are_journaled_as_what_it_returns() -> None:
    class Money:
        def __json__(self) -> dict[str, Any]:
            return {"amount": Decimal("5.00"), "currency": "EUR"}

    assert loads(dumps([Money()], what="x")) == [{"amount": Decimal("5.00"), "currency": "EUR"}]


@pytest.mark.parametrize(("value", "where", "type_name"), [
    ({"payment": {"amount": object()}}, "value['payment']['amount']", "of type builtins.object"),
    ({"tags": [1, {"a", "b"}]}, "value['tags'][1]", "of type builtins.set"),
    ([bytearray(b"x")], "value[0]", "of type builtins.bytearray"),
    ({"delay": timedelta(seconds=3)}, "value['delay']", "of type datetime.timedelta"),
    ({date(2024, 1, 1): 1}, "value key datetime.date(2024, 1, 1)", "of type datetime.date"),
])
def test_what_celery_refuses_is_still_refused_with_place_and_type(value: Any, where: str, type_name: str) -> None:
    with pytest.raises(SerializationError) as error:
        dumps(value, what="result of step 'charge' in run r1")
    message = str(error.value)
    assert "result of step 'charge' in run r1" in message
    assert f"{where} is {type_name}" in message


def test_unencodable_value_names_the_place_and_the_type() -> None:
    class Money:
        pass

    with pytest.raises(SerializationError) as error:
        dumps({"payment": {"amount": Money()}}, what="result of step 'charge' in run r1")
    message = str(error.value)
    assert "value['payment']['amount']" in message and "Money" in message
    assert "datetime, date, time, Decimal, UUID, bytes" in message


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused_with_their_place(number: float) -> None:
    with pytest.raises(SerializationError, match=r"value\['scores'\]\[1\] is a float .* no NaN or infinity"):
        dumps({"scores": [1.0, number]}, what="x")
    with pytest.raises(SerializationError, match="value is a float"):
        dumps(number, what="x")


def test_decimal_nan_is_a_string_in_json_and_round_trips() -> None:
    back = loads(dumps(Decimal("NaN"), what="x"))
    assert isinstance(back, Decimal) and back.is_nan()


def test_a_dict_that_looks_like_a_type_marker_is_refused() -> None:
    # It would decode as a Decimal on replay: a different value than the step returned.
    with pytest.raises(SerializationError, match=r"value\['x'\] is a dict whose keys are exactly '__type__'"):
        dumps({"x": {"__type__": "decimal", "__value__": "1"}}, what="x")
    assert loads(dumps({"__type__": "mine", "value": 1}, what="x")) == {"__type__": "mine", "value": 1}
    assert loads(dumps(["__type__"], what="x")) == ["__type__"]


def test_circular_reference_is_refused_with_its_place() -> None:
    loop: list[Any] = [1]
    loop.append({"back": loop})
    with pytest.raises(SerializationError, match=r"value\[1\]\['back'\] is a list that contains itself"):
        dumps(loop, what="x")


def test_marker_of_a_type_this_process_does_not_know_is_shown_as_is() -> None:
    text = '{"p":{"__type__":"registered.elsewhere","__value__":[1,2]}}'
    assert loads(text) == {"p": {"__type__": "registered.elsewhere", "__value__": [1, 2]}}


def test_too_large_payload_names_the_limit() -> None:
    with pytest.raises(PayloadTooLargeError, match="over the limit of 100 bytes"):
        dumps("x" * 200, what="arguments of step 's'", max_bytes=100)


def test_plain_step_sized_payload_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain JSON never calls a Python hook per value, so it costs what json.dumps/json.loads cost."""
    def never(*_args: Any) -> Any:
        raise AssertionError("the fast path called a Python hook")

    payload = {"order_id": 42, "amount": 129.95, "customer": {"name": "Ana", "vip": True, "notes": None},
               "items": [{"sku": f"SKU-{i}", "qty": i % 3 + 1, "tags": ["a", "b"]} for i in range(50)]}
    monkeypatch.setattr(serialization._ENCODER, "default", never)
    monkeypatch.setattr(kombu_json, "object_hook", never)
    monkeypatch.setattr(serialization, "_first_refused", never)
    assert loads(dumps(payload, what="x")) == payload
