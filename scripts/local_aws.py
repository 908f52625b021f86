#!/usr/bin/env python3
"""The local stack's AWS side, on any SQS/KMS endpoint (moto here, LocalStack too).

  local_aws.py setup [--max-receive-count N] [--visibility-timeout S]
      creates (or updates) login-queue-dlq, login-queue and login-replay-queue (where the
      vault service sends `pii-vault quarantine replay`), each with a RedrivePolicy to the
      DLQ, and the KMS key alias/pii-vault; prints `export NAME=value` lines.
  local_aws.py load [--file F] [--extra-bad]
      sends the exercise's messages (or F, a JSON array of bodies) to login-queue.
  local_aws.py depth
      prints the message counts of login-queue, login-queue-dlq and login-replay-queue.

Uses the AWS environment (AWS_ENDPOINT_URL, AWS_REGION, credentials).
"""
import argparse
import json
import pathlib
import sys

import boto3

ROOT = pathlib.Path(__file__).resolve().parent.parent
QUEUE, DLQ, REPLAY_QUEUE, ALIAS = "login-queue", "login-queue-dlq", "login-replay-queue", "alias/pii-vault"

# Bad messages of kinds the exercise's data lacks, for `load --extra-bad`.
EXTRA_BAD = [
    "not json at all",
    json.dumps([1, 2, 3]),
    json.dumps({"user_id": "u-bad-ip", "app_version": "1.0", "device_type": "ios",
                "ip": "300.300.1.1", "locale": None, "device_id": "000-00-0000"}),
    json.dumps({"user_id": "u-bad-version", "app_version": "1.0-beta", "device_type": "ios",
                "ip": "192.0.2.1", "locale": None, "device_id": "000-00-0001"}),
]


def setup(args) -> None:
    sqs, kms = boto3.client("sqs"), boto3.client("kms")
    dlq_url = sqs.create_queue(QueueName=DLQ, Attributes={"MessageRetentionPeriod": "1209600"})["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    attributes = {
        "VisibilityTimeout": str(args.visibility_timeout),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(args.max_receive_count)}),
    }
    queue_url = queue_with(sqs, QUEUE, attributes)
    # The replay queue: what only the vault service sends to, so the function honours the
    # original id and date a replay carries from it (REPLAY_QUEUE_ARN) and from nowhere else.
    replay_url = queue_with(sqs, REPLAY_QUEUE, attributes)
    replay_arn = sqs.get_queue_attributes(QueueUrl=replay_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    aliases = {a["AliasName"] for a in kms.list_aliases()["Aliases"]}
    if ALIAS not in aliases:
        key_id = kms.create_key(Description="login-etl PII vault (local)")["KeyMetadata"]["KeyId"]
        kms.create_alias(AliasName=ALIAS, TargetKeyId=key_id)
    print(f"export QUEUE_URL='{queue_url}'")
    print(f"export DLQ_URL='{dlq_url}'")
    print(f"export KMS_KEY_ID='{ALIAS}'")
    # The vault service's (replay, import-dlq) and the function's (REPLAY_QUEUE_ARN) settings.
    print(f"export REPLAY_QUEUE_URL='{replay_url}'")
    print(f"export REPLAY_QUEUE_ARN='{replay_arn}'")
    print(f"export DEAD_LETTER_QUEUE_URL='{dlq_url}'")


def queue_with(sqs, name: str, attributes: dict) -> str:
    """The queue `name`, created or updated to have `attributes`; its URL."""
    try:
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    except sqs.exceptions.QueueNameExists:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    # create_queue keeps an existing queue's attributes; make them what was asked.
    sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return url


def load(args) -> None:
    sqs = boto3.client("sqs")
    queue_url = sqs.get_queue_url(QueueName=QUEUE)["QueueUrl"]
    if args.file:
        bodies = [b if isinstance(b, str) else json.dumps(b) for b in json.loads(pathlib.Path(args.file).read_text())]
    else:
        messages = json.loads((ROOT / "tests/fixtures/login-queue-messages.json").read_text())
        bodies = [json.dumps(m) for m in messages]
    if args.extra_bad:
        bodies += EXTRA_BAD
    for start in range(0, len(bodies), 10):
        entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies[start:start + 10])]
        failed = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed", [])
        if failed:
            sys.exit(f"SendMessageBatch failed for {len(failed)} messages")
    print(f"loaded {len(bodies)} messages into {QUEUE}", file=sys.stderr)


def depth(_args) -> None:
    sqs = boto3.client("sqs")
    for name in (QUEUE, DLQ, REPLAY_QUEUE):
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        total = sum(int(attrs.get(k, 0)) for k in (
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"))
        print(f"{name} {total}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("setup")
    p.add_argument("--max-receive-count", type=int, default=3)
    p.add_argument("--visibility-timeout", type=int, default=2)
    p.set_defaults(run=setup)
    p = commands.add_parser("load")
    p.add_argument("--file")
    p.add_argument("--extra-bad", action="store_true")
    p.set_defaults(run=load)
    commands.add_parser("depth").set_defaults(run=depth)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
