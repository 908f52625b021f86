#!/bin/sh
# LocalStack ready hook: queue, DLQ (redrive after 3 receives), KMS alias, 100 messages.
# Uses the project's own scripts/local_aws.py with LocalStack's bundled boto3.
set -eu
export AWS_ENDPOINT_URL=http://localhost:4566 AWS_REGION=us-east-1 \
       AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
py=/opt/code/localstack/.venv/bin/python
[ -x "$py" ] || py=python3
"$py" /opt/login-etl/scripts/local_aws.py setup --max-receive-count 3 --visibility-timeout 30
"$py" /opt/login-etl/scripts/local_aws.py load
