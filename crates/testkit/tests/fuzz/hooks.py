"""What Courier's OpenAPI document names by a format of its own, taught to schemathesis.

JSON Schema cannot say what a valid cron expression or IANA time zone is; the document
marks those fields `format: cron` and `format: iana-time-zone`, and these strategies
generate valid ones, so that a request valid by the document (with these formats) must
be accepted.
"""

import uuid
from datetime import datetime, timedelta, timezone

import schemathesis
from hypothesis import strategies as st

schemathesis.openapi.format(
    "cron",
    st.sampled_from(
        [
            "* * * * *",
            "0 9 * * MON-FRI",
            "*/5 * * * *",
            "30 2 1 * *",
            "0 0 L * *",
            "15 10 ? * 6#3",
            "*/10 * * * * *",
            "0 0 12 * * SUN",
        ]
    ),
)
schemathesis.openapi.format(
    "iana-time-zone",
    st.sampled_from(
        ["UTC", "Europe/Warsaw", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]
    ),
)


def _time(value):
    """An RFC 3339 time as Python reads it, or None."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        return None


def _order(body, first, second):
    """Swaps `first` and `second` of `body` when both are times in the wrong order."""
    a, b = _time(body.get(first)), _time(body.get(second))
    if a and b and b < a:
        body[first], body[second] = body[second], body[first]


def _not_future(body, field):
    """Makes a time in the future now."""
    at = _time(body.get(field))
    if at and at > datetime.now(timezone.utc):
        body[field] = datetime.now(timezone.utc).isoformat()


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    """Makes the relations JSON Schema cannot state hold, so that a request generated
    valid by the document is valid to the server too; each relation has tests of its own
    (tests/schedules.rs, tests/operations.rs, tests/api.rs).

    - A fresh `Idempotency-Key` per request: a key used before with another body is
      refused (422, as the IETF draft says), which is the key's history speaking.
    - `end_at` not before `start_at`, a backfill's `to` not before `from` nor more than
      1000 occurrences after it, and neither a backfill's `to` nor a bulk action's
      `as_of` in the future.
    - `PUT /v1/schedules/{name}`: a `name` in the body is the path's.
    - `PATCH /v1/schedules/{name}`: `timezone` only with `cron`, and `start_at` and
      `end_at` together or neither (otherwise the stored schedule decides whether the
      request is valid, not the request).
    """
    if case.headers and "Idempotency-Key" in case.headers:
        case.headers["Idempotency-Key"] = (
            case.headers["Idempotency-Key"][:200] + "-" + uuid.uuid4().hex
        )
    body = case.body
    if not isinstance(body, dict):
        return
    path, method = case.operation.path, case.operation.method.upper()
    _order(body, "start_at", "end_at")
    if path.endswith("/backfill"):
        _order(body, "from", "to")
        _not_future(body, "from")
        _not_future(body, "to")
        # At most 1000 occurrences: a quarter of an hour holds at most 900 of the finest
        # calendar (every second).
        start, end = _time(body.get("from")), _time(body.get("to"))
        if start and end and end - start > timedelta(minutes=15):
            body["from"] = (end - timedelta(minutes=15)).isoformat()
    if path.startswith("/v1/jobs/bulk/"):
        _not_future(body, "as_of")
    if path == "/v1/schedules/{name}" and method == "PUT" and body.get("name") is not None:
        body["name"] = (case.path_parameters or {}).get("name", body["name"])
    if path == "/v1/schedules/{name}" and method == "PATCH":
        if body.get("cron") is None:
            body.pop("timezone", None)
        # One of the two alone is compared with the stored other.
        if body.get("start_at") is None or body.get("end_at") is None:
            body.pop("start_at", None)
            body.pop("end_at", None)
