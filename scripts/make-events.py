#!/usr/bin/env python3
"""Writes the sample SQS events of events/ from tests/fixtures/login-queue-messages.json.

Deterministic (fixed ids and timestamps), so re-running it changes nothing. The events
have the shape Lambda's SQS event source mapping delivers, for
`cargo lambda invoke login-etl --data-file events/<name>.json`.
"""
import hashlib
import json
import pathlib
import uuid

ROOT = pathlib.Path(__file__).resolve().parent.parent
REGION = "us-east-1"
QUEUE_ARN = f"arn:aws:sqs:{REGION}:000000000000:login-queue"
# 2025-11-20T08:00:00Z; one second between messages.
FIRST_SENT_MS = 1_763_625_600_000


def record(message_id: str, body: str, index: int, receive_count: int = 1) -> dict:
    sent = FIRST_SENT_MS + index * 1000
    return {
        "messageId": message_id,
        "receiptHandle": f"AQEB{hashlib.sha256(message_id.encode()).hexdigest()}",
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": str(receive_count),
            "SentTimestamp": str(sent),
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": str(sent + 250),
        },
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(body.encode()).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": QUEUE_ARN,
        "awsRegion": REGION,
    }


def write(name: str, records: list) -> None:
    path = ROOT / "events" / name
    path.write_text(json.dumps({"Records": records}, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)} ({len(records)} records)")


def main() -> None:
    messages = json.loads((ROOT / "tests/fixtures/login-queue-messages.json").read_text())

    # The exercise's queue, verbatim bodies, in queue order.
    write("login-queue-100.json", [
        record(str(uuid.uuid5(uuid.NAMESPACE_URL, f"login-queue/{i}")), json.dumps(m), i)
        for i, m in enumerate(messages)
    ])

    # Good and bad messages interleaved: the ids say which is which ("-bad-").
    good = [m for m in messages if "user_id" in m]
    bad_bodies = {
        "wrong-message-type": json.dumps({"foo": "oops_wrong_msg_type", "bar": "123"}),
        "not-json": "user_id=1&ip=10.0.0.1",
        "not-an-object": json.dumps([good[0]]),
        "ip-invalid": json.dumps({**good[1], "ip": "300.1.2.3"}),
        "app-version-unusable": json.dumps({**good[2], "app_version": "2.x-beta"}),
        "app-version-too-large": json.dumps({**good[3], "app_version": "1.5000.0"}),
        "user-id-too-long": json.dumps({**good[4], "user_id": "u" * 129}),
        "device-type-wrong-type": json.dumps({**good[5], "device_type": 7}),
        "device-id-null": json.dumps({**good[6], "device_id": None}),
        "control-character": json.dumps({**good[7], "user_id": "abc\u0000def"}),
    }
    mixed = []
    for i, (reason, body) in enumerate(bad_bodies.items()):
        mixed.append(record(f"mixed-good-{i:02d}", json.dumps(good[20 + i]), 2 * i))
        mixed.append(record(f"mixed-bad-{reason}", body, 2 * i + 1))
    write("mixed-batch.json", mixed)

    # One ip and one device id repeated across messages (the sample data has none).
    shared_ip, shared_device = good[40]["ip"], good[41]["device_id"]
    dups = []
    for i in range(6):
        m = dict(good[50 + i])
        if i % 2 == 0:
            m["ip"] = shared_ip
        if i < 3:
            m["device_id"] = shared_device
        dups.append(record(f"duplicates-{i:02d}", json.dumps(m), i))
    write("duplicates.json", dups)


if __name__ == "__main__":
    main()
