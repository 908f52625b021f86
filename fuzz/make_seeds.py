#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets from events/*.json plus hostile cases.

    python3 fuzz/make_seeds.py          # from the repository root

Seeds get readable names (seed-*); `cargo fuzz cmin` later keeps or replaces them with
libFuzzer's content-hash names. The sample events hold PII-like fixture data only.
"""
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


def compact(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def record(message_id, body, sent="1763625600000", **extra):
    r = {"messageId": message_id, "body": body,
         "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": sent},
         "messageAttributes": {}, "eventSource": "aws:sqs", "awsRegion": "us-east-1"}
    if sent is None:
        del r["attributes"]["SentTimestamp"]
    r.update(extra)
    return r


def main():
    events = {p.stem: json.loads(p.read_text()) for p in sorted((ROOT / "events").glob("*.json"))}
    mixed = {r["messageId"]: r["body"] for r in events["mixed-batch"]["Records"]}
    good = events["login-queue-100"]["Records"][0]["body"]

    bodies = {
        "valid": good,
        "valid-null-locale": mixed["mixed-good-00"],
        "wrong-message-type": mixed["mixed-bad-wrong-message-type"],
        "not-json": mixed["mixed-bad-not-json"],
        "not-an-object": mixed["mixed-bad-not-an-object"],
        "ip-invalid": mixed["mixed-bad-ip-invalid"],
        "app-version-unusable": mixed["mixed-bad-app-version-unusable"],
        "app-version-too-large": mixed["mixed-bad-app-version-too-large"],
        "user-id-too-long": mixed["mixed-bad-user-id-too-long"],
        "device-type-wrong-type": mixed["mixed-bad-device-type-wrong-type"],
        "device-id-null": mixed["mixed-bad-device-id-null"],
        "control-character": mixed["mixed-bad-control-character"],
        # Hostile: duplicate key spelled with an escape, odd spellings that must canonicalize,
        # nesting, lone surrogates and huge numbers in ignored values, edge lengths.
        "duplicate-escaped-key": '{"user_id":"u","app_version":"1","device_type":"ios",'
                                 '"ip":"10.0.0.1","i\\u0070":"10.0.0.2","locale":null,"device_id":"d"}',
        "odd-but-valid": '{"extra":[1,{"a":null}],"user_id":"\\u00e9t\\u00e9 \\ud83d\\ude00",'
                         '"app_version":" 2146.999.999 ","device_type":"x","ip":" ::FFFF:10.1.2.3 ",'
                         '"locale":"pt-BR","device_id":"\\t111-22-3333 ","more":1e400}',
        "ipv6-long-form": '{"user_id":"' + "é" * 128 + '","app_version":"0","device_type":"' + "t" * 32 +
                          '","ip":"2001:DB8:0:0:0:0:0:1","locale":"' + "l" * 32 + '","device_id":"' + "d" * 256 + '"}',
        "deep-unknown": '{"x":' + "[" * 300 + "]" * 300 + ',"user_id":"u"}',
        "lone-surrogate-unknown": '{"x":"\\ud800","user_id":"u","app_version":"1","device_type":"t",'
                                  '"ip":"1.2.3.4","locale":null,"device_id":"d"}',
        "invisible-characters": '{"user_id":"u\u00adser","app_version":"1","device_type":"t",'
                                '"ip":"1.2.3.4","locale":"\ufeffRU","device_id":"111\u200b-22-3333"}',
        "empty": "",
        "blank": " \t\r\n",
        "bom": "\ufeff" + good,
        "trailing-garbage": good + " x",
    }

    sqs = {
        "duplicates": events["duplicates"],
        "mixed-batch": events["mixed-batch"],
        "queue-first-3": {"Records": events["login-queue-100"]["Records"][:3]},
        "empty-batch": {"Records": []},
        "hostile-records": {"Records": [
            {"body": good, "attributes": {"SentTimestamp": "1763625600000"}},  # no messageId
            record("", good),                                                   # empty messageId
            record("no-timestamp", good, sent=None),
            record("ts-not-digits", good, sent="-1"),
            record("ts-too-large", good, sent="99999999999999999999"),
            record("ts-out-of-chrono-range", good, sent="9223372036854775807"),
            record("ts-zero", good, sent="0"),
            record("no-body", None),
            record("blank-body", " \n"),
            record("dup-id", good),
            record("dup-id", "not json"),
            record("same-ip-other-spelling", bodies["odd-but-valid"]),
            record("nulls", good, attributes=None, messageAttributes=None),
        ]},
    }

    for name, body in bodies.items():
        write(CORPUS / "parse_body" / f"seed-{name}", body)
    for name, event in sqs.items():
        write(CORPUS / "sqs_event" / f"seed-{name}.json", compact(event))


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))


if __name__ == "__main__":
    main()
