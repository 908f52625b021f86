#!/usr/bin/env python3
"""Offline validation of a SAM template (default: template.yaml).

1. aws-sam-translator expands the SAM resources (plain cfn-lint on the SAM file does not
   look inside AWS::Serverless::Function events);
2. cfn-lint checks the expanded CloudFormation;
3. the project's own invariants, one function per group below: event sources, queues,
   the outage ride-out arithmetic, the replay queue's senders, each KMS key's policy by
   what the key is for, who may invoke the vault service, the scheduled purge job's
   privileges, and the metrics the dashboard and alarms name.

Exit 0 when clean, 1 with one line per problem otherwise. Parameter defaults are what the
arithmetic uses: a deploy that overrides them is not checked here.
"""
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

ROOT = pathlib.Path(__file__).resolve().parent.parent

# SQS: a message's visibility timeout "The maximum is 12 hours" (developer guide), counted
# from the receive: ChangeMessageVisibility cannot make the total exceed it, and is refused,
# not shortened, when asked for more than the time left (API reference).
SQS_MAX_VISIBILITY_SECONDS = 43200
# An outage this long must send no good message to the dead-letter queue (issue 17).
RIDE_OUT_SECONDS = 86400
DLQ_RETENTION_SECONDS = 1209600  # 14 days, the longest SQS keeps a message

USE_ACTIONS = {"kms:decrypt", "kms:generatedatakey", "kms:encrypt", "kms:reencrypt*", "kms:*", "*"}
PII_CONTEXT_KEYS = {"app", "purpose", "key_version"}
# The key purposes (pii_keys.purpose, the encryption context's `purpose`) that a principal
# other than the vault service may unwrap: never `audit`, the key of the audit's hash chain.
NON_AUDIT_PURPOSES = {"index:ip", "index:device_id", "data", "erasure"}
# The one use a scheduled job that appends to the audit (the vault expiry: a scheduled
# function that names the PII key in KMS_KEY_ID) may have of that key: kms:Decrypt of the
# audit key, purpose exactly `audit` (it chains entries; it reads no value, makes no key).
AUDIT_PURPOSE = "audit"
# Rights that let a principal grant itself (or anyone) use of a key, or rewrite its policy.
GRANTING = {"kms:*", "kms:create*", "kms:creategrant", "kms:put*", "kms:putkeypolicy"}
# The roles people use: the staff's (shipped, StaffRole) and the key administrator's.
HUMAN_ROLES = {"StaffRole": {"Fn::GetAtt": ["StaffRole", "Arn"]}, "KeyAdminRoleArn": {"Ref": "KeyAdminRoleArn"}}
# The staff role's trust: the session name must be the IAM user name (docs/security.md).
SESSION_NAME_IS_USER_NAME = ("sts:RoleSessionName", "${aws:username}")

# AWS namespaces a dashboard or alarm may use, with the metrics those services publish
# (AWS SQS developer guide, "Available CloudWatch metrics"; Lambda developer guide,
# "Types of metrics for Lambda functions").
AWS_METRICS = {
    "AWS/SQS": {"ApproximateAgeOfOldestMessage", "ApproximateNumberOfMessagesDelayed",
                "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesVisible",
                "NumberOfEmptyReceives", "NumberOfMessagesDeleted", "NumberOfMessagesReceived",
                "NumberOfMessagesSent", "SentMessageSize"},
    "AWS/Lambda": {"Invocations", "Errors", "Throttles", "Duration", "ConcurrentExecutions",
                   "DeadLetterErrors", "DestinationDeliveryFailures", "IteratorAge",
                   "UnreservedConcurrentExecutions", "ProvisionedConcurrentExecutions"},
}
AWS_METRIC_DIMENSIONS = {"AWS/SQS": "QueueName", "AWS/Lambda": "FunctionName"}
PROJECT_NAMESPACE = "login-etl"
CLOUDWATCH_UNITS = {
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
    "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
    "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second",
    "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second",
    "Gigabits/Second", "Terabits/Second", "Count/Second", "None",
}


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


# ---- small helpers over CloudFormation values --------------------------------------------

def as_list(value):
    return value if isinstance(value, list) else [value]


def parameter_default(template: dict, value):
    if isinstance(value, dict) and "Ref" in value:
        return template.get("Parameters", {}).get(value["Ref"], {}).get("Default")
    return value


def of_type(cfn: dict, kind: str) -> dict:
    return {k: v for k, v in cfn.get("Resources", {}).items() if v.get("Type") == kind}


def props(resource: dict) -> dict:
    return resource.get("Properties", {}) or {}


def target(value):
    """The logical id a Ref or GetAtt names (GetAtt X.Arn, Ref X), else None."""
    if isinstance(value, dict):
        if "Ref" in value:
            return value["Ref"]
        if "Fn::GetAtt" in value:
            attr = value["Fn::GetAtt"]
            return (attr.split(".")[0] if isinstance(attr, str) else attr[0])
    return None


def sub_text(value):
    if isinstance(value, dict) and "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        return sub[0] if isinstance(sub, list) else sub
    return value if isinstance(value, str) else None


def queue_of(value, queues: dict):
    """The queue a value names: GetAtt Q.Arn, Ref Q, or an ARN built from its QueueName."""
    name = target(value)
    if name in queues:
        return name
    text = sub_text(value)
    if text:
        part = r"(?:\$\{[^}]+\}|[^:$]+)"  # ${AWS::Region} holds colons of its own
        match = re.fullmatch(rf"arn:{part}:sqs:{part}:{part}:([A-Za-z0-9_-]+)", text)
        if match:
            for logical, queue in queues.items():
                if props(queue).get("QueueName") == match.group(1):
                    return logical
        match = re.fullmatch(r"\$\{(\w+)\.Arn\}", text)
        if match and match.group(1) in queues:
            return match.group(1)
    return None


def mentions(value, logical_id: str, name=None) -> bool:
    """Whether a value refers to a resource, by logical id or by its physical name."""
    text = json.dumps(value)
    if re.search(rf"(?<![A-Za-z0-9]){re.escape(logical_id)}(?![A-Za-z0-9])", text):
        return True
    return bool(name) and (f"function:{name}" in text or text == json.dumps(name))


def actions_of(statement: dict) -> set:
    return {a.lower() for a in as_list(statement.get("Action", []))}


def principals_of(statement: dict) -> list:
    principal = statement.get("Principal")
    return as_list(principal.get("AWS")) if isinstance(principal, dict) else as_list(principal)


def is_any_principal(statement: dict) -> bool:
    principal = statement.get("Principal")
    return principal == "*" or (isinstance(principal, dict) and "*" in as_list(principal.get("AWS")))


def is_account_root(principal) -> bool:
    return ":root" in json.dumps(principal)


def is_human(principal, name: str) -> bool:
    return principal == HUMAN_ROLES[name]


def uses_key(actions: set) -> set:
    return actions & USE_ACTIONS or {a for a in actions if a.startswith(("kms:decrypt", "kms:generatedatakey"))}


def policy_statements(resource: dict) -> list:
    """Every IAM statement of a role (inline policies) or an IAM policy resource."""
    p = props(resource)
    documents = [policy.get("PolicyDocument", {}) for policy in p.get("Policies", [])]
    if "PolicyDocument" in p:
        documents.append(p["PolicyDocument"])
    return [s for d in documents for s in as_list(d.get("Statement", []))]


def environment(function: dict) -> dict:
    return props(function).get("Environment", {}).get("Variables", {}) or {}


def role_of(function: dict):
    return target(props(function).get("Role"))


def scheduled_functions(cfn: dict) -> set:
    """The functions a schedule or rule targets."""
    functions = of_type(cfn, "AWS::Lambda::Function")
    scheduled = {target(t.get("Arn")) for rule in of_type(cfn, "AWS::Events::Rule").values()
                 for t in as_list(props(rule).get("Targets", []))}
    scheduled |= {target(props(s).get("Target", {}).get("Arn")) for s in of_type(cfn, "AWS::Scheduler::Schedule").values()}
    return {f for f in scheduled if f in functions}


def key_of(cfn: dict, value):
    """The KMS key (logical id) a value names, directly or through an alias."""
    keys = of_type(cfn, "AWS::KMS::Key")
    aliases = {n: target(props(a).get("TargetKeyId")) for n, a in of_type(cfn, "AWS::KMS::Alias").items()}
    return target(value) if target(value) in keys else aliases.get(target(value))


def audit_appenders(cfn: dict) -> dict:
    """{role: the key its function names in KMS_KEY_ID} for each scheduled function that
    loads keys: a job that appends to the audit (the vault expiry) needs the audit key."""
    functions = of_type(cfn, "AWS::Lambda::Function")
    return {role_of(functions[f]): key_of(cfn, environment(functions[f]).get("KMS_KEY_ID"))
            for f in scheduled_functions(cfn) if "KMS_KEY_ID" in environment(functions[f])}


def unwraps_only_the_audit_key(statement: dict) -> bool:
    """kms:Decrypt alone, for the purpose `audit` alone."""
    purposes = as_list(statement.get("Condition", {}).get("StringEquals", {}).get("kms:EncryptionContext:purpose") or [])
    return actions_of(statement) == {"kms:decrypt"} and purposes == [AUDIT_PURPOSE]


def sources_by_function(cfn: dict, queues: dict) -> dict:
    """{function logical id: [queue logical ids its event source mappings poll]}."""
    result = {}
    for esm in of_type(cfn, "AWS::Lambda::EventSourceMapping").values():
        function = target(props(esm).get("FunctionName"))
        result.setdefault(function, []).append(queue_of(props(esm).get("EventSourceArn"), queues))
    return result


def redrive_of(queue: dict):
    redrive = props(queue).get("RedrivePolicy")
    return json.loads(redrive) if isinstance(redrive, str) else redrive


def visibility_timeouts(sam: dict, queue: dict, timeouts: list) -> list:
    """(function timeout, visibility timeout) pairs the queue can be deployed with."""
    visibility = props(queue).get("VisibilityTimeout", 30)
    if isinstance(visibility, dict) and "Fn::FindInMap" in visibility:
        table = sam["Mappings"][visibility["Fn::FindInMap"][0]]
        return [(int(t), int(v["Seconds"])) for t, v in table.items()]
    return [(int(parameter_default(sam, t)), int(parameter_default(sam, visibility))) for t in timeouts]


def default_visibility_timeout(sam: dict, queue: dict) -> int:
    """The visibility timeout the queue gets with every parameter at its default."""
    visibility = props(queue).get("VisibilityTimeout", 30)
    if isinstance(visibility, dict) and "Fn::FindInMap" in visibility:
        table, key, attribute = visibility["Fn::FindInMap"]
        return int(sam["Mappings"][table][str(parameter_default(sam, key))][attribute])
    return int(parameter_default(sam, visibility))


def hide_seconds(n: int, base: int, cap: int) -> int:
    """What the function hides a batch for on receive n: min(cap, base x 2^(n-1))."""
    return min(cap, base * 2 ** (n - 1))


# ---- invariant groups ---------------------------------------------------------------------

def check_event_sources(cfn: dict) -> list:
    """Every event source mapping reports batch item failures, so one bad message never
    fails the good ones of its batch."""
    problems = []
    mappings = of_type(cfn, "AWS::Lambda::EventSourceMapping")
    if not mappings:
        problems.append("no SQS event source mapping for the function")
    for name, esm in mappings.items():
        if "ReportBatchItemFailures" not in props(esm).get("FunctionResponseTypes", []):
            problems.append(f"{name}: FunctionResponseTypes must include ReportBatchItemFailures")
    return problems


def check_queues(sam: dict, cfn: dict) -> list:
    """Source queues redrive to a DLQ in this template that outlives them; visibility
    timeout >= 6x the function timeout; every queue encrypted by a key of this template
    (keys, not IAM alone, decide who reads it), TLS only, and under one queue policy."""
    problems = []
    queues = of_type(cfn, "AWS::SQS::Queue")
    keys = of_type(cfn, "AWS::KMS::Key")
    aliases = {n: target(props(a).get("TargetKeyId")) for n, a in of_type(cfn, "AWS::KMS::Alias").items()}
    timeouts = [parameter_default(sam, props(f).get("Timeout", 3)) for f in of_type(cfn, "AWS::Lambda::Function").values()]
    sources = {k: v for k, v in queues.items() if "RedrivePolicy" in props(v)}
    if not sources:
        problems.append("no queue has a RedrivePolicy to a dead-letter queue")
    for name, queue in sources.items():
        redrive = redrive_of(queue)
        dlq = queue_of(redrive.get("deadLetterTargetArn"), queues)
        retention = int(props(queue).get("MessageRetentionPeriod", 345600))
        if dlq is None:
            problems.append(f"{name}: RedrivePolicy.deadLetterTargetArn must be the ARN of a queue in this template")
        else:
            dlq_retention = int(props(queues[dlq]).get("MessageRetentionPeriod", 345600))
            if dlq_retention < DLQ_RETENTION_SECONDS:
                problems.append(f"{dlq}: the dead-letter queue must keep messages 14 days (1209600 s)")
            # A moved message keeps its original enqueue time (SQS developer guide).
            if dlq_retention <= retention:
                problems.append(f"{dlq}: keeps messages {dlq_retention} s, not longer than its source {name} ({retention} s); "
                                "a moved message keeps its enqueue time and would expire early")
        for timeout, seconds in visibility_timeouts(sam, queue, timeouts):
            if seconds < 6 * timeout:
                problems.append(f"{name}: VisibilityTimeout {seconds} s is less than 6 x function timeout {timeout} s")

    for name, queue in queues.items():
        key = props(queue).get("KmsMasterKeyId")
        key = target(key) if target(key) in keys else aliases.get(target(key))
        if key not in keys:
            problems.append(f"{name}: must be encrypted with a KMS key of this template (KmsMasterKeyId), "
                            "not SQS-managed SSE or an AWS managed key: the key policy decides who reads it")

    covering = {}
    for policy_name, policy in of_type(cfn, "AWS::SQS::QueuePolicy").items():
        for queue in props(policy).get("Queues", []):
            covering.setdefault(queue_of(queue, queues), []).append(policy_name)
    for name in queues:
        policies = covering.get(name, [])
        if len(policies) > 1:
            problems.append(f"{name}: is in {len(policies)} queue policies ({', '.join(policies)}); "
                            "a queue keeps one policy, the last written")
        statements = [s for p in policies for s in as_list(props(cfn["Resources"][p])["PolicyDocument"].get("Statement", []))]
        if not any(s.get("Effect") == "Deny" and is_any_principal(s)
                   and str(s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport")).lower() == "false"
                   for s in statements):
            problems.append(f"{name}: its queue policy must deny requests without TLS (aws:SecureTransport false)")
    return problems


def check_ride_out(sam: dict, cfn: dict) -> tuple:
    """The outage ride-out: summed over maxReceiveCount receives, the backoff the function
    applies hides a message >= 24 h and ends inside its queue's retention; one hide is at
    most SQS's 12 h counted from the receive, i.e. the cap plus the queue's visibility
    timeout (the call comes while the message is in flight) fits in 12 h, for every
    function timeout the template allows, at its default and at its MaxValue; the base is
    not below the visibility timeout; and the function reads exactly these parameters, so
    this adds up what is deployed."""
    problems, info = [], []
    parameters = sam.get("Parameters", {})
    settings = {}
    for parameter, variable in (("VisibilityBackoffBaseSeconds", "VISIBILITY_BACKOFF_BASE_SECONDS"),
                                ("VisibilityBackoffMaxSeconds", "VISIBILITY_BACKOFF_MAX_SECONDS")):
        if "Default" not in parameters.get(parameter, {}):
            problems.append(f"parameter {parameter} with a default is required (the backoff the lint adds up)")
            return problems, info
        settings[variable] = (parameter, int(parameters[parameter]["Default"]))
    base = settings["VISIBILITY_BACKOFF_BASE_SECONDS"][1]
    cap = settings["VISIBILITY_BACKOFF_MAX_SECONDS"][1]
    declared_max = parameters["VisibilityBackoffMaxSeconds"].get("MaxValue")
    if cap > SQS_MAX_VISIBILITY_SECONDS:
        problems.append(f"VisibilityBackoffMaxSeconds default {cap} s exceeds SQS's visibility limit of "
                        f"{SQS_MAX_VISIBILITY_SECONDS} s per receive")
    if declared_max is None or int(declared_max) > SQS_MAX_VISIBILITY_SECONDS:
        problems.append(f"VisibilityBackoffMaxSeconds needs MaxValue <= {SQS_MAX_VISIBILITY_SECONDS} "
                        "so that no deploy can ask SQS for more")

    queues = of_type(cfn, "AWS::SQS::Queue")
    functions = of_type(cfn, "AWS::Lambda::Function")
    for function, fed_by in sources_by_function(cfn, queues).items():
        if function not in functions:
            continue
        variables = environment(functions[function])
        for variable, (parameter, _) in settings.items():
            if variables.get(variable) != {"Ref": parameter}:
                problems.append(f"{function}: environment {variable} must be !Ref {parameter} "
                                "(the lint adds up that parameter; the function must use it)")
        for queue in fed_by:
            if queue is None or "RedrivePolicy" not in props(queues[queue]):
                problems.append(f"{function}: polls {queue or 'a queue outside this template'}, which has no RedrivePolicy")
                continue
            receives = int(parameter_default(sam, redrive_of(queues[queue]).get("maxReceiveCount")) or 0)
            total = sum(hide_seconds(n, base, cap) for n in range(1, receives + 1))
            retention = int(props(queues[queue]).get("MessageRetentionPeriod", 345600))
            if total < RIDE_OUT_SECONDS:
                problems.append(f"{queue}: {receives} receives hide a message {total} s in all, less than "
                                f"{RIDE_OUT_SECONDS} s: an outage of 24 h would send good messages to the DLQ")
            if total > retention:
                problems.append(f"{queue}: {receives} receives hide a message {total} s in all, beyond its "
                                f"MessageRetentionPeriod of {retention} s: it would expire instead of reaching the DLQ")
            longest = max([v for _, v in visibility_timeouts(sam, queues[queue], [])]
                          or [default_visibility_timeout(sam, queues[queue])])
            for label, value in (("default", cap), ("MaxValue", int(declared_max or cap))):
                if value + longest > SQS_MAX_VISIBILITY_SECONDS:
                    problems.append(f"{queue}: a hide of {value} s (VisibilityBackoffMaxSeconds {label}) plus the time since "
                                    f"the receive, up to the VisibilityTimeout of {longest} s, exceeds SQS's {SQS_MAX_VISIBILITY_SECONDS} s "
                                    "counted from the receive: SQS would refuse it")
            visibility = default_visibility_timeout(sam, queues[queue])
            if base < visibility:
                problems.append(f"{queue}: VisibilityBackoffBaseSeconds {base} s is below the queue's VisibilityTimeout "
                                f"{visibility} s: the first backoff would return a message sooner than a plain failure")
            info.append(f"{queue}: {receives} receives x min({cap}, {base} x 2^(n-1)) = {total} s "
                        f"({total / 3600:.1f} h) >= {RIDE_OUT_SECONDS} s; retention {retention} s, "
                        f"{retention - total} s to spare")
    return problems, info


def replay_senders(cfn: dict) -> dict:
    """{replay queue: the role allowed to send to it}: the queue a function's
    REPLAY_QUEUE_ARN names, and the role of the function whose REPLAY_QUEUE_URL names it."""
    queues = of_type(cfn, "AWS::SQS::Queue")
    functions = of_type(cfn, "AWS::Lambda::Function")
    result = {}
    for function in functions.values():
        queue = queue_of(environment(function).get("REPLAY_QUEUE_ARN"), queues)
        if queue:
            result[queue] = next((role_of(f) for f in functions.values()
                                  if queue_of(environment(f).get("REPLAY_QUEUE_URL"), queues) == queue), None)
    return result


def check_replay_queue(cfn: dict) -> list:
    """The function honours replay attributes only from the replay queue, so that queue
    must take messages from the vault service alone: it feeds the function, and its queue
    policy denies sqs:SendMessage (which also authorizes SendMessageBatch) to every
    principal but the vault service's role, by aws:PrincipalArn."""
    problems = []
    queues = of_type(cfn, "AWS::SQS::Queue")
    functions = of_type(cfn, "AWS::Lambda::Function")
    senders = replay_senders(cfn)
    if not senders:
        problems.append("no function names its replay queue (REPLAY_QUEUE_ARN: !GetAtt <queue>.Arn)")
    fed = sources_by_function(cfn, queues)
    for name, function in functions.items():
        queue = queue_of(environment(function).get("REPLAY_QUEUE_ARN"), queues)
        if queue and queue not in fed.get(name, []):
            problems.append(f"{name}: REPLAY_QUEUE_ARN names {queue}, which is not one of its event sources")
    for queue, sender in senders.items():
        if sender is None:
            problems.append(f"{queue}: no function sends replays to it (REPLAY_QUEUE_URL: !Ref {queue})")
            continue
        statements = [s for p in of_type(cfn, "AWS::SQS::QueuePolicy").values()
                      if queue in [queue_of(q, queues) for q in props(p).get("Queues", [])]
                      for s in as_list(props(p)["PolicyDocument"].get("Statement", []))]
        if not any(denies_sends_except(s, queue, sender, queues) for s in statements):
            problems.append(f"{queue}: its queue policy must deny sqs:SendMessage to every principal except {sender} "
                            f"(Effect Deny, Principal *, Condition ArnNotEquals aws:PrincipalArn: !GetAtt {sender}.Arn)")
    return problems


def denies_sends_except(statement: dict, queue: str, sender: str, queues: dict) -> bool:
    actions = actions_of(statement)
    resources = as_list(statement.get("Resource", []))
    condition = statement.get("Condition", {})
    if statement.get("Effect") != "Deny" or not is_any_principal(statement):
        return False
    if not actions & {"sqs:sendmessage", "sqs:send*", "sqs:*", "*"}:
        return False
    if "*" not in resources and queue not in [queue_of(r, queues) for r in resources]:
        return False
    # One operator, one key: anything more would narrow the deny.
    if len(condition) != 1 or len(next(iter(condition.values()))) != 1:
        return False
    operator, keys = next(iter(condition.items()))
    excepted = as_list(keys.get("aws:PrincipalArn", []))
    return (operator in ("ArnNotEquals", "ArnNotLike", "StringNotEquals", "StringNotLike")
            and len(excepted) == 1 and target(excepted[0]) == sender)


def check_keys(cfn: dict) -> list:
    """Each KMS key by what it is for: the key of the queues (KmsMasterKeyId) gets the SQS
    rule, the functions' KMS_KEY_ID the PII rule; one key is never both. Then for every
    key: no wildcard principal, no human use, root reads metadata only, grants only for
    AWS resources."""
    problems = []
    keys = of_type(cfn, "AWS::KMS::Key")
    queues = of_type(cfn, "AWS::SQS::Queue")
    aliases = {n: target(props(a).get("TargetKeyId")) for n, a in of_type(cfn, "AWS::KMS::Alias").items()}
    resolve = lambda value: target(value) if target(value) in keys else aliases.get(target(value))
    by_key = {}
    for name, queue in queues.items():
        by_key.setdefault(resolve(props(queue).get("KmsMasterKeyId")), []).append(name)
    functions = of_type(cfn, "AWS::Lambda::Function")
    pii = {resolve(environment(f).get("KMS_KEY_ID")) for f in functions.values()}
    # The vault service: the function behind a function URL.
    vault_roles = {role_of(functions[target(props(url).get("TargetFunctionArn"))])
                   for url in of_type(cfn, "AWS::Lambda::Url").values()
                   if target(props(url).get("TargetFunctionArn")) in functions}
    if not keys:
        problems.append("no KMS key")
    for name, key in keys.items():
        if name in by_key and name in pii:
            problems.append(f"{name}: encrypts queues and is the functions' KMS_KEY_ID; the vault's key and the queues' must differ")
        if name in by_key:
            problems += check_queue_key_policy(name, key, by_key[name], cfn)
        else:
            problems += check_pii_key_policy(name, key, vault_roles, set(audit_appenders(cfn)))
        problems += check_key_administration(name, key)
    return problems


def check_pii_key_policy(name: str, key: dict, vault_roles: set, appenders: set = frozenset()) -> list:
    """The PII key unwraps only the project's keys: every use requires an encryption
    context whose keys are exactly app, purpose, key_version; and every principal but the
    vault service's role only for the purposes in NON_AUDIT_PURPOSES (StringEquals on
    kms:EncryptionContext:purpose), so nothing else can unwrap the audit key; except a
    statement naming only scheduled jobs that append to the audit (`appenders`), which may
    kms:Decrypt the audit key and nothing else."""
    problems = []
    for statement in as_list(props(key).get("KeyPolicy", {}).get("Statement", [])):
        uses = uses_key(actions_of(statement))
        if statement.get("Effect") != "Allow" or not uses:
            continue
        condition = statement.get("Condition", {})
        keys_condition = condition.get("ForAllValues:StringEquals", {}).get("kms:EncryptionContextKeys")
        required = condition.get("Null", {}).get("kms:EncryptionContextKeys")
        if set(as_list(keys_condition or [])) != PII_CONTEXT_KEYS or str(required).lower() != "false":
            problems.append(
                f"{name}: statement {statement.get('Sid')} allows {sorted(uses)} without requiring "
                f"exactly the encryption context keys {sorted(PII_CONTEXT_KEYS)}"
            )
        others = [target(p) or json.dumps(p) for p in principals_of(statement) if target(p) not in vault_roles]
        purposes = as_list(condition.get("StringEquals", {}).get("kms:EncryptionContext:purpose") or [])
        if others and set(others) <= set(appenders) and AUDIT_PURPOSE in purposes:
            if not unwraps_only_the_audit_key(statement):
                problems.append(
                    f"{name}: statement {statement.get('Sid')} lets {', '.join(map(str, others))} (a scheduled job "
                    f"that appends to the audit) {sorted(actions_of(statement))} for purposes {purposes}; it may only "
                    f"kms:Decrypt the audit key (purpose exactly {AUDIT_PURPOSE})"
                )
        elif others and (not purposes or not set(purposes) <= NON_AUDIT_PURPOSES):
            problems.append(
                f"{name}: statement {statement.get('Sid')} lets {', '.join(map(str, others))} use the key without "
                f"limiting kms:EncryptionContext:purpose to {sorted(NON_AUDIT_PURPOSES)} "
                "(only the vault service may unwrap the audit key)"
            )
    return problems


def check_queue_key_policy(name: str, key: dict, encrypted: list, cfn: dict) -> list:
    """The queue key is used only through SQS (kms:ViaService sqs.<region>.amazonaws.com)
    and per queue (kms:EncryptionContext:aws:sqs:arn = a queue of this key), by no human
    role, with GenerateDataKey and Decrypt only; a replay queue's key encrypts for its one
    sender; and every function can decrypt the queues its event source mappings poll."""
    problems = []
    queues = of_type(cfn, "AWS::SQS::Queue")
    senders = replay_senders(cfn)
    decryptable = {}  # principal logical id -> queues it may decrypt
    for statement in as_list(props(key).get("KeyPolicy", {}).get("Statement", [])):
        sid = statement.get("Sid")
        actions = actions_of(statement)
        uses = uses_key(actions)
        if statement.get("Effect") != "Allow" or not uses:
            continue
        if not actions <= {"kms:decrypt", "kms:generatedatakey"}:
            problems.append(f"{name}: statement {sid} allows {sorted(actions)}; a queue key needs only "
                            "kms:GenerateDataKey (senders) and kms:Decrypt")
        principals = principals_of(statement)
        for human in HUMAN_ROLES:
            if any(is_human(p, human) for p in principals):
                problems.append(f"{name}: statement {sid} lets the human role {human} use the queue key {sorted(uses)}")
        if any(is_account_root(p) for p in principals):
            problems.append(f"{name}: statement {sid} lets the account root use the queue key: any IAM principal could")
        equals = statement.get("Condition", {}).get("StringEquals", {})
        via = sub_text(equals.get("kms:ViaService")) or ""
        if not (via == "sqs.${AWS::Region}.amazonaws.com" or re.fullmatch(r"sqs\.[a-z0-9-]+\.amazonaws\.com", via)):
            problems.append(f"{name}: statement {sid} allows {sorted(uses)} without StringEquals "
                            "kms:ViaService = sqs.${AWS::Region}.amazonaws.com (only through SQS)")
        context = as_list(equals.get("kms:EncryptionContext:aws:sqs:arn", []))
        scoped = [queue_of(v, queues) for v in context]
        if not context or None in scoped or not set(scoped) <= set(encrypted):
            problems.append(f"{name}: statement {sid} allows {sorted(uses)} without StringEquals "
                            "kms:EncryptionContext:aws:sqs:arn naming only queues of this key")
        if "kms:generatedatakey" in actions:
            for queue in set(scoped) & set(senders):
                if [target(p) for p in principals] != [senders[queue]]:
                    problems.append(f"{name}: statement {sid} lets {principals} encrypt to the replay queue {queue}; "
                                    f"only {senders[queue]} may")
        if "kms:decrypt" in actions:
            for principal in principals:
                decryptable.setdefault(target(principal), set()).update(q for q in scoped if q)
    functions = of_type(cfn, "AWS::Lambda::Function")
    for function, fed_by in sources_by_function(cfn, queues).items():
        role = role_of(functions.get(function, {}))
        for queue in fed_by:
            if queue in encrypted and queue not in decryptable.get(role, set()):
                problems.append(f"{name}: {role} cannot decrypt {queue}, which {function} polls "
                                "(the event source mapping reads with the execution role)")
    return problems


def check_key_administration(name: str, key: dict) -> list:
    """Staff hold no KMS action, the key administrator uses no key, the account root
    cannot grant or rewrite, and CreateGrant is denied unless for an AWS resource."""
    problems = []
    statements = as_list(props(key).get("KeyPolicy", {}).get("Statement", []))
    for statement in statements:
        if statement.get("Effect") != "Allow":
            continue
        sid = statement.get("Sid")
        actions = actions_of(statement)
        principals = principals_of(statement)
        if is_any_principal(statement):
            problems.append(f"{name}: statement {sid} allows any principal")
        if any(is_human(p, "StaffRole") for p in principals) and actions:
            problems.append(f"{name}: statement {sid} gives the staff role KMS actions {sorted(actions)}; "
                            "staff reach the vault only through the vault service")
        if any(is_human(p, "KeyAdminRoleArn") for p in principals) and uses_key(actions):
            problems.append(f"{name}: statement {sid} lets the key administrator use the key {sorted(uses_key(actions))}")
        if any(is_account_root(p) for p in principals) and actions & GRANTING:
            problems.append(f"{name}: statement {sid} gives the account root {sorted(actions & GRANTING)}: "
                            "any IAM principal could grant itself use of the key")
    denies_grants = any(
        s.get("Effect") == "Deny"
        and "kms:creategrant" in actions_of(s)
        and str(s.get("Condition", {}).get("Bool", {}).get("kms:GrantIsForAWSResource")).lower() == "false"
        for s in statements
    )
    if not denies_grants:
        problems.append(f"{name}: the key policy must deny kms:CreateGrant unless kms:GrantIsForAWSResource")
    return problems


def check_vault_service_invocation(cfn: dict) -> list:
    """The vault service answers only SigV4-proven callers through its URL: AuthType
    AWS_IAM; its resource policy names only the staff and key-admin roles, for the URL
    (InvokeFunctionUrl, or InvokeFunction with InvokedViaFunctionUrl); no schedule, rule,
    event source, subscription or IAM policy may invoke it directly (a direct invoke could
    carry any identity in its event); no local identity."""
    problems = []
    urls = of_type(cfn, "AWS::Lambda::Url")
    functions = of_type(cfn, "AWS::Lambda::Function")
    if not urls:
        problems.append("no function URL for the vault service")
    vaults = {}
    for name, url in urls.items():
        if props(url).get("AuthType") != "AWS_IAM":
            problems.append(f"{name}: a function URL must use AuthType AWS_IAM (the caller is what SigV4 proves)")
        function = target(props(url).get("TargetFunctionArn"))
        if function in functions:
            vaults[function] = props(functions[function]).get("FunctionName")
    named_roles = list(HUMAN_ROLES.values())
    for vault, physical in vaults.items():
        about = lambda value: mentions(value, vault, physical)
        for name, permission in of_type(cfn, "AWS::Lambda::Permission").items():
            p = props(permission)
            if not about(p.get("FunctionName")):
                continue
            through_url = ((p.get("Action") == "lambda:InvokeFunctionUrl" and p.get("FunctionUrlAuthType") == "AWS_IAM")
                           or (p.get("Action") == "lambda:InvokeFunction"
                               and str(p.get("InvokedViaFunctionUrl")).lower() == "true"))
            if not through_url or p.get("Principal") not in named_roles:
                problems.append(f"{name}: lets {p.get('Principal')} {p.get('Action')} the vault service; only the staff "
                                "and key-admin roles may, through its URL with AWS_IAM auth")
        for name, esm in of_type(cfn, "AWS::Lambda::EventSourceMapping").items():
            if about(props(esm).get("FunctionName")):
                problems.append(f"{name}: an event source mapping invokes the vault service")
        for kind, field in (("AWS::Events::Rule", "Targets"), ("AWS::Scheduler::Schedule", "Target"),
                            ("AWS::SNS::Subscription", "Endpoint")):
            for name, resource in of_type(cfn, kind).items():
                if about(props(resource).get(field)):
                    problems.append(f"{name}: a schedule, rule or subscription targets the vault service; "
                                    "a direct invoke could carry any identity (give the job its own function)")
        for kind in ("AWS::IAM::Role", "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            for name, resource in of_type(cfn, kind).items():
                for statement in policy_statements(resource):
                    invoke = {a for a in actions_of(statement) if a in ("*", "lambda:*") or a.startswith("lambda:invoke")}
                    resources = as_list(statement.get("Resource", []))
                    if statement.get("Effect") == "Allow" and invoke and ("*" in resources or about(resources)):
                        problems.append(f"{name}: allows {sorted(invoke)} on the vault service (directly or by *)")
    for name, function in functions.items():
        if "PII_VAULT_LOCAL_IDENTITY" in environment(function):
            problems.append(f"{name}: PII_VAULT_LOCAL_IDENTITY is for the local stack only; deployed, the caller is the IAM principal")
    return problems


def check_staff_trust(cfn: dict) -> list:
    """The staff role is shipped, the vault service's STAFF_ROLE_ARN, and assumable only
    with sts:RoleSessionName = ${aws:username}: the session name, which the service records
    and budgets, is then the person's IAM user name, not a label the caller chooses."""
    role = of_type(cfn, "AWS::IAM::Role").get("StaffRole")
    if role is None:
        return ["StaffRole: the template must ship the staff role (its trust policy binds the session name to the user)"]
    problems = []
    for name, function in of_type(cfn, "AWS::Lambda::Function").items():
        staff = environment(function).get("STAFF_ROLE_ARN")
        if staff is not None and staff != HUMAN_ROLES["StaffRole"]:
            problems.append(f"{name}: STAFF_ROLE_ARN must be the shipped StaffRole, not {staff}")
    key, value = SESSION_NAME_IS_USER_NAME
    for statement in as_list(props(role).get("AssumeRolePolicyDocument", {}).get("Statement", [])):
        if statement.get("Effect") != "Allow":
            continue
        sid = statement.get("Sid")
        actions = actions_of(statement)
        if actions != {"sts:assumerole"}:
            problems.append(f"StaffRole: trust statement {sid} allows {sorted(actions)}; only sts:AssumeRole, "
                            "by IAM users (who have an aws:username)")
        if statement.get("Condition", {}).get("StringEquals", {}).get(key) != value:
            problems.append(f"StaffRole: trust statement {sid} lets a caller choose its session name; it needs "
                            f"StringEquals {key} = {value}")
    return problems


def check_scheduled_jobs(cfn: dict) -> list:
    """A scheduled function (the quarantine purge, the partition maintenance, the vault
    expiry) holds the least: logs and VPC, its own secret (a database login no other
    function uses); no KMS, SQS or Lambda permission in IAM, and no place in a key policy,
    but one: a job that loads keys (KMS_KEY_ID: the vault expiry, which appends to the
    audit) may, in the key it names, read the key's metadata (kms:DescribeKey) and
    kms:Decrypt the audit key alone, in a statement naming only such jobs. Every
    function that reads QUARANTINE_RETENTION_DAYS reads the one parameter, and every one
    that reads VAULT_RETENTION_DAYS the one VaultRetentionDays."""
    problems = []
    functions = of_type(cfn, "AWS::Lambda::Function")
    roles = of_type(cfn, "AWS::IAM::Role")
    scheduled = scheduled_functions(cfn)
    appenders = audit_appenders(cfn)
    allowed_managed = {"AWSLambdaVPCAccessExecutionRole", "AWSLambdaBasicExecutionRole"}
    for function in sorted(f for f in scheduled if f in functions):
        role = role_of(functions[function])
        if role not in roles:
            problems.append(f"{function}: a scheduled function needs its own role in this template")
            continue
        for managed in props(roles[role]).get("ManagedPolicyArns", []):
            if not any(m in json.dumps(managed) for m in allowed_managed):
                problems.append(f"{role}: managed policy {managed} on the role of scheduled {function} (logs and VPC only)")
        for statement in policy_statements(roles[role]):
            broad = {a for a in actions_of(statement) if a == "*" or a.startswith(("kms:", "sqs:", "lambda:"))}
            if statement.get("Effect") == "Allow" and broad:
                problems.append(f"{role}: the role of scheduled {function} allows {sorted(broad)}; it needs none")
        for key_name, key in of_type(cfn, "AWS::KMS::Key").items():
            for statement in as_list(props(key).get("KeyPolicy", {}).get("Statement", [])):
                if statement.get("Effect") != "Allow" or not any(target(p) == role for p in principals_of(statement)):
                    continue
                own_key = role in appenders and appenders[role] == key_name
                metadata = actions_of(statement) <= {"kms:describekey"}
                audit_only = (unwraps_only_the_audit_key(statement)
                              and all(target(p) in appenders for p in principals_of(statement)))
                if not (own_key and (metadata or audit_only)):
                    problems.append(f"{key_name}: statement {statement.get('Sid')} names {role}, the role of scheduled {function}"
                                    + (" (it may only read the key's metadata and kms:Decrypt the audit key)" if own_key else ""))
    # Each scheduled job logs in as itself: a database secret no other function reads.
    for function in sorted(f for f in scheduled if f in functions):
        secret = environment(functions[function]).get("DATABASE_SECRET_ARN")
        if secret is None:
            continue
        shared = sorted(n for n, f in functions.items()
                        if n != function and environment(f).get("DATABASE_SECRET_ARN") == secret)
        if shared:
            problems.append(f"{function}: its DATABASE_SECRET_ARN is also that of {shared}; a scheduled job needs a "
                            "database login of its own")
    for name, function in functions.items():
        value = environment(function).get("QUARANTINE_RETENTION_DAYS")
        if value is not None and value != {"Ref": "QuarantineRetentionDays"}:
            problems.append(f"{name}: QUARANTINE_RETENTION_DAYS must be !Ref QuarantineRetentionDays (one retention for all)")
        value = environment(function).get("VAULT_RETENTION_DAYS")
        if value is not None and value != {"Ref": "VaultRetentionDays"}:
            problems.append(f"{name}: VAULT_RETENTION_DAYS must be !Ref VaultRetentionDays (one retention for all)")
    return problems


def partition_reach_days(root: pathlib.Path = ROOT) -> dict:
    """The queues' retentions (days) the partition maintenance assumes when it refuses a
    PARTITION_DAYS_BACK shorter than a message's reach (crates/core/src/store/partitions.rs)."""
    text = (root / "crates/core/src/store/partitions.rs").read_text()
    days = {}
    for queue, const in (("login-queue", "LOGIN_QUEUE_DAYS"), ("login-queue-dlq", "DEAD_LETTER_QUEUE_DAYS"),
                         ("login-replay-queue", "REPLAY_QUEUE_DAYS")):
        found = re.search(rf"pub const {const}: u32 = (\d+);", text)
        days[queue] = int(found.group(1)) if found else None
    return days


def check_partition_reach(cfn: dict, assumed: dict) -> list:
    """user_logins has partitions back as far as a message can be dated: the maintenance
    refuses PARTITION_DAYS_BACK below the queues' retentions it knows (Rust constants) plus
    QUARANTINE_RETENTION_DAYS. So no queue may keep a message longer than assumed, and the
    maintenance must get QUARANTINE_RETENTION_DAYS."""
    problems = []
    for name, queue in of_type(cfn, "AWS::SQS::Queue").items():
        queue_name = props(queue).get("QueueName")
        if queue_name not in assumed:
            continue
        retention = int(props(queue).get("MessageRetentionPeriod", 345600))
        days = assumed[queue_name]
        if days is None:
            problems.append(f"{name}: crates/core/src/store/partitions.rs names no retention for {queue_name}")
        elif retention > days * 86400:
            problems.append(f"{name}: keeps messages {retention} s, longer than the {days} days the partition "
                            f"maintenance assumes for {queue_name} (crates/core/src/store/partitions.rs)")
    for name, function in of_type(cfn, "AWS::Lambda::Function").items():
        variables = environment(function)
        if "PARTITION_DAYS_BACK" in variables and "QUARANTINE_RETENTION_DAYS" not in variables:
            problems.append(f"{name}: reads PARTITION_DAYS_BACK without QUARANTINE_RETENTION_DAYS, against which "
                            "it checks it")
    return problems


def emitted_metrics(root: pathlib.Path = ROOT) -> set:
    """Metric names the Rust sources emit: the ("Name", value, "Unit") tuples of the files
    of src/ and crates/*/src that call metrics::line(, outside comments and test modules."""
    names = set()
    files = list((root / "src").rglob("*.rs")) + list(root.glob("crates/*/src/**/*.rs"))
    tuple_shape = re.compile(r'\(\s*"([A-Za-z][A-Za-z0-9_]*)"\s*,[^;"]*?,\s*"([A-Za-z/]+)"\s*\)')
    for path in files:
        text = path.read_text(errors="replace")
        if "metrics::line(" not in text:
            continue
        text = re.split(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)[0]
        text = re.sub(r"//[^\n]*", "", text)
        names |= {name for name, unit in tuple_shape.findall(text) if unit in CLOUDWATCH_UNITS}
    return names


def check_metrics(cfn: dict, emitted: set) -> list:
    """Every dashboard widget and alarm names a metric something emits: in the login-etl
    namespace one the Rust sources emit, with a Function dimension that is one of this
    template's functions; otherwise a known metric of AWS/SQS or AWS/Lambda on a queue or
    function of this template."""
    problems = []
    queue_names = {props(q).get("QueueName") for q in of_type(cfn, "AWS::SQS::Queue").values()}
    functions = of_type(cfn, "AWS::Lambda::Function")
    function_names = {props(f).get("FunctionName") for f in functions.values()}

    def resolve(match):
        name = match.group(1)
        if name == "AWS::Region":
            return os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
        logical, _, attribute = name.partition(".")
        resource = props(cfn.get("Resources", {}).get(logical, {}))
        if attribute == "QueueName" or (not attribute and logical in functions):
            return resource.get("QueueName") or resource.get("FunctionName") or f"<{name}>"
        return f"<{name}>"

    def check(where, namespace, metric, dimensions, search=False):
        if namespace == PROJECT_NAMESPACE:
            if metric not in emitted:
                problems.append(f"{where}: {namespace} metric {metric} is not emitted by the Rust sources "
                                "(metrics::line tuples in src/, crates/*/src)")
            if dimensions.get("Function") not in function_names:
                problems.append(f"{where}: {namespace} metric {metric} needs a Function dimension naming a function "
                                f"of this template {sorted(function_names)}, not {dimensions.get('Function')}")
        elif namespace in AWS_METRICS:
            if metric not in AWS_METRICS[namespace]:
                problems.append(f"{where}: {namespace} has no metric {metric}")
            dimension = AWS_METRIC_DIMENSIONS[namespace]
            known = queue_names if namespace == "AWS/SQS" else function_names
            if not search and dimensions.get(dimension) not in known:
                problems.append(f"{where}: {namespace} {metric} needs {dimension} naming one of this template's "
                                f"{sorted(known)}, not {dimensions.get(dimension)}")
        else:
            problems.append(f"{where}: namespace {namespace} is neither {PROJECT_NAMESPACE} nor one of {sorted(AWS_METRICS)}")

    for name, dashboard in of_type(cfn, "AWS::CloudWatch::Dashboard").items():
        text = sub_text(props(dashboard).get("DashboardBody"))
        try:
            body = json.loads(re.sub(r"\$\{([^}!]+)\}", resolve, text or ""))
        except ValueError as error:
            problems.append(f"{name}: DashboardBody is not JSON: {error}")
            continue
        for index, widget in enumerate(body.get("widgets", [])):
            if widget.get("type") != "metric":
                continue
            where = f"{name} widget {index} ({widget.get('properties', {}).get('title')})"
            if "region" not in widget.get("properties", {}):
                problems.append(f"{where}: a metric widget needs a region")
            for entry in widget.get("properties", {}).get("metrics", []):
                if entry and isinstance(entry[0], dict):
                    search = re.search(r"SEARCH\(\s*'(.*?)'\s*,", entry[0].get("expression", ""))
                    if not search:
                        continue  # metric math over the ids of other entries, which are checked
                    schema = re.search(r"\{([^}]*)\}", search.group(1))
                    metric = re.search(r'MetricName\s*=\s*"?([A-Za-z0-9_]+)"?', search.group(1))
                    function = re.search(r'Function\s*=\s*"?([^"\s]+)"?', search.group(1))
                    if not schema or not metric:
                        problems.append(f"{where}: a SEARCH needs a {{namespace,dimensions}} schema and a MetricName")
                        continue
                    namespace = schema.group(1).split(",")[0].strip()
                    dimensions = {"Function": function.group(1)} if function else {}
                    check(where, namespace, metric.group(1), dimensions, search=True)
                    continue
                if any(part in (".", "...") for part in entry if isinstance(part, str)):
                    problems.append(f"{where}: write each metric out in full (no \".\"/\"...\"), so the lint can read it")
                    continue
                strings = [part for part in entry if isinstance(part, str)]
                check(where, strings[0], strings[1], dict(zip(strings[2::2], strings[3::2])))

    for name, alarm in of_type(cfn, "AWS::CloudWatch::Alarm").items():
        p = props(alarm)
        stats = [({"Namespace": p["Namespace"], "MetricName": p.get("MetricName"), "Dimensions": p.get("Dimensions", [])})
                 ] if "Namespace" in p else [m["MetricStat"]["Metric"] for m in p.get("Metrics", []) if "MetricStat" in m]
        for metric in stats:
            dimensions = {}
            for d in metric.get("Dimensions", []):
                value = d.get("Value")
                logical = target(value)
                resource = props(cfn.get("Resources", {}).get(logical, {}))
                dimensions[d["Name"]] = resource.get("QueueName") or resource.get("FunctionName") or value
            check(name, metric["Namespace"], metric["MetricName"], dimensions)
    return problems


# The SQS calls the ingest function's code makes (`.name()` in src/), and the IAM action
# each needs; the event source mapping polls with the same role.
FUNCTION_SQS_CALLS = {
    "change_message_visibility_batch": "sqs:changemessagevisibility",
    "change_message_visibility": "sqs:changemessagevisibility",
    "get_queue_url": "sqs:getqueueurl",
}
MAPPING_SQS_ACTIONS = {"sqs:receivemessage", "sqs:deletemessage", "sqs:getqueueattributes"}


def function_sqs_actions(root: pathlib.Path = ROOT) -> set:
    """The IAM actions the ingest function's own SQS calls need (scanned from src/)."""
    text = "\n".join(path.read_text() for path in sorted((root / "src").rglob("*.rs")))
    return {action for call, action in FUNCTION_SQS_CALLS.items() if f".{call}()" in text}


def check_polling_rights(cfn: dict, calls=None) -> list:
    """Every function with event source mappings may, on each queue it polls, do what the
    mapping does and every SQS call of its own code (the failure path hides a batch with
    GetQueueUrl + ChangeMessageVisibilityBatch: without the rights no batch is ever hidden)."""
    problems = []
    queues = of_type(cfn, "AWS::SQS::Queue")
    roles = {**of_type(cfn, "AWS::IAM::Role"), **of_type(cfn, "AWS::IAM::Policy")}
    needed = MAPPING_SQS_ACTIONS | (function_sqs_actions() if calls is None else calls)
    functions = of_type(cfn, "AWS::Lambda::Function")
    for function, polled in sources_by_function(cfn, queues).items():
        role = role_of(functions.get(function, {}))
        statements = [s for r, res in roles.items() if r == role for s in policy_statements(res)]
        for queue in polled:
            name = props(queues.get(queue, {})).get("QueueName")
            granted = set()
            for statement in statements:
                if statement.get("Effect") == "Allow" and any(
                    queue_of(resource, queues) == queue or mentions(resource, queue, name)
                    for resource in as_list(statement.get("Resource", []))
                ):
                    granted |= actions_of(statement)
            if "sqs:*" not in granted:
                for action in sorted(needed - granted):
                    problems.append(f"{function}: its role {role} may not {action} on {queue}, which it polls")
    return problems


def check_invariants(sam: dict, cfn: dict, emitted=None) -> tuple:
    """All project invariants: (problems, informational lines)."""
    ride_out_problems, info = check_ride_out(sam, cfn)
    problems = (check_event_sources(cfn) + check_queues(sam, cfn) + ride_out_problems + check_polling_rights(cfn)
                + check_replay_queue(cfn) + check_keys(cfn) + check_vault_service_invocation(cfn) + check_staff_trust(cfn)
                + check_scheduled_jobs(cfn) + check_metrics(cfn, emitted_metrics() if emitted is None else emitted)
                + check_partition_reach(cfn, partition_reach_days()))
    return problems, info


def run_cfn_lint(cfn: dict) -> list:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as out:
        json.dump(cfn, out)
    try:
        lint = subprocess.run(
            [str(pathlib.Path(sys.executable).parent / "cfn-lint"), "--format", "parseable", out.name],
            capture_output=True, text=True,
        )
    finally:
        os.unlink(out.name)
    problems = []
    for line in (lint.stdout + lint.stderr).splitlines():
        # cfn-lint's parseable lines: file:line:col:endline:endcol:rule:message
        parts = line.split(":", 5)
        rule = parts[5].split(":", 1)[0] if len(parts) == 6 else ""
        if line.strip() and not rule.startswith(("I", "W")):
            problems.append(f"cfn-lint: {parts[5] if len(parts) == 6 else line}")
    return problems


def lint(text: str, with_cfn_lint: bool = True, emitted=None) -> tuple:
    """(problems, info, resource count) for a template's text."""
    sam = yaml_parse(text)
    try:
        cfn = translate(yaml_parse(text))
    except Exception as error:  # the translator reports invalid SAM as exceptions
        return [f"SAM translation failed: {error}"], [], 0
    problems = run_cfn_lint(cfn) if with_cfn_lint else []
    invariant_problems, info = check_invariants(sam, cfn, emitted)
    return problems + invariant_problems, info, len(cfn.get("Resources", {}))


def main() -> int:
    path = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "template.yaml")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    problems, info, count = lint(path.read_text())
    for line in info:
        print(f"{path.name}: {line}")
    for problem in problems:
        print(f"{path.name}: {problem}")
    print(f"{path.name}: {'OK' if not problems else f'{len(problems)} problem(s)'} "
          f"({count} CloudFormation resources after SAM translation)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
