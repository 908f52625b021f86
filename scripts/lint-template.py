#!/usr/bin/env python3
"""Offline validation of a SAM template (default: template.yaml).

1. aws-sam-translator expands the SAM resources (plain cfn-lint on the SAM file does not
   look inside AWS::Serverless::Function events);
2. cfn-lint checks the expanded CloudFormation;
3. the project's own invariants: the event source mapping reports batch item failures,
   the queue's visibility timeout is at least 6x the function timeout, the redrive policy
   targets the DLQ with maxReceiveCount >= 5 and the DLQ keeps 14 days, and the KMS key
   policy lets nobody use the key without the project's encryption context.

Exit 0 when clean, 1 with one line per problem otherwise.
"""
import json
import os
import pathlib
import subprocess
import sys
import tempfile

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

ROOT = pathlib.Path(__file__).resolve().parent.parent
USE_ACTIONS = {"kms:decrypt", "kms:generatedatakey", "kms:encrypt", "kms:reencrypt*", "kms:*"}
CONTEXT_KEYS = {"app", "purpose", "key_version"}


class NoManagedPolicies:
    """The template names managed policies by ARN, so no IAM lookup is needed."""

    def load(self):
        return {}


def translate(template: dict) -> dict:
    for resource in template.get("Resources", {}).values():
        if resource.get("Type") == "AWS::Serverless::Function":
            # What `sam package` does: the local CodeUri becomes an S3 object.
            resource["Properties"]["CodeUri"] = "s3://login-etl-artifacts/login-etl.zip"
    return transform(template, {}, NoManagedPolicies())


def parameter_default(template: dict, value):
    if isinstance(value, dict) and "Ref" in value:
        return template.get("Parameters", {}).get(value["Ref"], {}).get("Default")
    return value


def as_list(value):
    return value if isinstance(value, list) else [value]


def check_invariants(sam: dict, cfn: dict) -> list:
    problems = []
    resources = cfn.get("Resources", {})
    by_type = lambda t: {k: v for k, v in resources.items() if v.get("Type") == t}

    mappings = by_type("AWS::Lambda::EventSourceMapping")
    if not mappings:
        problems.append("no SQS event source mapping for the function")
    for name, esm in mappings.items():
        props = esm.get("Properties", {})
        if "ReportBatchItemFailures" not in props.get("FunctionResponseTypes", []):
            problems.append(f"{name}: FunctionResponseTypes must include ReportBatchItemFailures")

    functions = by_type("AWS::Lambda::Function")
    timeouts = [parameter_default(sam, f["Properties"].get("Timeout", 3)) for f in functions.values()]
    queues = by_type("AWS::SQS::Queue")
    main = {k: v for k, v in queues.items() if "RedrivePolicy" in v.get("Properties", {})}
    if not main:
        problems.append("no queue has a RedrivePolicy to a dead-letter queue")
    for name, queue in main.items():
        props = queue["Properties"]
        redrive = props["RedrivePolicy"]
        if isinstance(redrive, str):
            redrive = json.loads(redrive)
        target = redrive.get("deadLetterTargetArn")
        dlq = target.get("Fn::GetAtt", [None])[0] if isinstance(target, dict) else None
        if dlq not in queues:
            problems.append(f"{name}: RedrivePolicy.deadLetterTargetArn must be the ARN of a queue in this template")
        elif int(queues[dlq]["Properties"].get("MessageRetentionPeriod", 345600)) < 1209600:
            problems.append(f"{dlq}: the dead-letter queue must keep messages 14 days (1209600 s)")
        count = parameter_default(sam, redrive.get("maxReceiveCount"))
        if count is None or int(count) < 5:
            problems.append(f"{name}: RedrivePolicy.maxReceiveCount must be at least 5 (is {count})")
        visibility = props.get("VisibilityTimeout", 30)
        if isinstance(visibility, dict) and "Fn::FindInMap" in visibility:
            table = sam["Mappings"][visibility["Fn::FindInMap"][0]]
            pairs = [(int(t), int(v["Seconds"])) for t, v in table.items()]
        else:
            pairs = [(int(parameter_default(sam, t)), int(parameter_default(sam, visibility))) for t in timeouts]
        for timeout, seconds in pairs:
            if seconds < 6 * timeout:
                problems.append(f"{name}: VisibilityTimeout {seconds} s is less than 6 x function timeout {timeout} s")
        if not props.get("SqsManagedSseEnabled") and "KmsMasterKeyId" not in props:
            problems.append(f"{name}: queue must be encrypted at rest (SSE)")

    keys = by_type("AWS::KMS::Key")
    if not keys:
        problems.append("no KMS key")
    for name, key in keys.items():
        for statement in as_list(key["Properties"].get("KeyPolicy", {}).get("Statement", [])):
            if statement.get("Effect") != "Allow":
                continue
            actions = {a.lower() for a in as_list(statement.get("Action", []))}
            principal = statement.get("Principal")
            if principal == "*" or (isinstance(principal, dict) and principal.get("AWS") == "*"):
                problems.append(f"{name}: statement {statement.get('Sid')} allows any principal")
            uses = actions & USE_ACTIONS or {a for a in actions if a.startswith("kms:decrypt") or a.startswith("kms:generatedatakey")}
            if not uses:
                continue
            condition = statement.get("Condition", {})
            keys_condition = condition.get("ForAllValues:StringEquals", {}).get("kms:EncryptionContextKeys")
            required = condition.get("Null", {}).get("kms:EncryptionContextKeys")
            if set(as_list(keys_condition or [])) != CONTEXT_KEYS or str(required).lower() != "false":
                problems.append(
                    f"{name}: statement {statement.get('Sid')} allows {sorted(uses)} without requiring "
                    f"exactly the encryption context keys {sorted(CONTEXT_KEYS)}"
                )
        problems += check_key_administration(name, key)

    # The vault service: IAM-authenticated URL, invoked by named roles, no local identity.
    urls = by_type("AWS::Lambda::Url")
    if not urls:
        problems.append("no function URL for the vault service")
    for name, url in urls.items():
        if url.get("Properties", {}).get("AuthType") != "AWS_IAM":
            problems.append(f"{name}: a function URL must use AuthType AWS_IAM (the caller is what SigV4 proves)")
    for name, permission in by_type("AWS::Lambda::Permission").items():
        props = permission.get("Properties", {})
        if props.get("Action") == "lambda:InvokeFunctionUrl":
            if props.get("Principal") in ("*", None) or props.get("FunctionUrlAuthType") != "AWS_IAM":
                problems.append(f"{name}: the vault service URL may be invoked only by named roles with AWS_IAM auth")
    for name, function in functions.items():
        variables = function.get("Properties", {}).get("Environment", {}).get("Variables", {})
        if "PII_VAULT_LOCAL_IDENTITY" in variables:
            problems.append(f"{name}: PII_VAULT_LOCAL_IDENTITY is for the local stack only; deployed, the caller is the IAM principal")
    return problems


# Rights that let a principal grant itself (or anyone) use of the key, or rewrite its policy.
GRANTING = {"kms:*", "kms:create*", "kms:creategrant", "kms:put*", "kms:putkeypolicy"}


def principals_of(statement: dict) -> list:
    principal = statement.get("Principal")
    return as_list(principal.get("AWS")) if isinstance(principal, dict) else as_list(principal)


def is_account_root(principal) -> bool:
    text = json.dumps(principal)
    return ":root" in text


def is_staff(principal) -> bool:
    return principal == {"Ref": "StaffRoleArn"}


def check_key_administration(name: str, key: dict) -> list:
    problems = []
    statements = as_list(key["Properties"].get("KeyPolicy", {}).get("Statement", []))
    for statement in statements:
        if statement.get("Effect") != "Allow":
            continue
        sid = statement.get("Sid")
        actions = {a.lower() for a in as_list(statement.get("Action", []))}
        principals = principals_of(statement)
        if any(is_staff(p) for p in principals) and actions:
            problems.append(f"{name}: statement {sid} gives the staff role KMS actions {sorted(actions)}; "
                            "staff reach the vault only through the vault service")
        if any(is_account_root(p) for p in principals) and actions & GRANTING:
            problems.append(f"{name}: statement {sid} gives the account root {sorted(actions & GRANTING)}: "
                            "any IAM principal could grant itself use of the key")
    denies_grants = any(
        s.get("Effect") == "Deny"
        and "kms:creategrant" in {a.lower() for a in as_list(s.get("Action", []))}
        and str(s.get("Condition", {}).get("Bool", {}).get("kms:GrantIsForAWSResource")).lower() == "false"
        for s in statements
    )
    if not denies_grants:
        problems.append(f"{name}: the key policy must deny kms:CreateGrant unless kms:GrantIsForAWSResource")
    return problems


def main() -> int:
    path = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "template.yaml")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    sam = yaml_parse(path.read_text())
    try:
        cfn = translate(yaml_parse(path.read_text()))
    except Exception as error:  # the translator reports invalid SAM as exceptions
        print(f"{path}: SAM translation failed: {error}")
        return 1
    problems = []
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as out:
        json.dump(cfn, out)
    try:
        lint = subprocess.run(
            [str(pathlib.Path(sys.executable).parent / "cfn-lint"), "--format", "parseable", out.name],
            capture_output=True, text=True,
        )
    finally:
        os.unlink(out.name)
    for line in (lint.stdout + lint.stderr).splitlines():
        # cfn-lint's parseable lines: file:line:col:endline:endcol:rule:message
        parts = line.split(":", 5)
        rule = parts[5].split(":", 1)[0] if len(parts) == 6 else ""
        if line.strip() and not rule.startswith(("I", "W")):
            problems.append(f"cfn-lint: {parts[5] if len(parts) == 6 else line}")
    problems += check_invariants(sam, cfn)
    for problem in problems:
        print(f"{path.name}: {problem}")
    print(f"{path.name}: {'OK' if not problems else f'{len(problems)} problem(s)'} "
          f"({len(cfn.get('Resources', {}))} CloudFormation resources after SAM translation)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
