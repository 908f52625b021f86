#!/usr/bin/env python3
"""Proves that `make lint-template` catches broken templates: each case breaks a copy of
template.yaml in one place and expects lint-template.py to report a given problem (not
just to fail: the message must be the one the break calls for); the shipped template must
pass. A case is first checked in-process without cfn-lint (fast); only if the invariants
do not report it is the whole lint, cfn-lint included, run on it. Prints 'N passed, N failed'."""
import concurrent.futures
import importlib.util
import logging
import os
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
LINT_SCRIPT = ROOT / "scripts/lint-template.py"
LINT = [sys.executable, str(LINT_SCRIPT)]

# (name, text to find, replacement, a piece of the problem the lint must report[, which
# occurrence of the text to break, when it appears more than once]).
BREAKS = [
    # Event sources
    ("event: misspelled ReportBatchItemFailures",
     "FunctionResponseTypes: [ReportBatchItemFailures]", "FunctionResponseTypes: [ReportBatchItemFailure]",
     "must include ReportBatchItemFailures", 1),
    ("event: BatchSize out of range",
     "BatchSize: !Ref BatchSize", "BatchSize: 20000", "cfn-lint: E3034"),
    ("event: batch item failures not reported (login-queue)",
     "            FunctionResponseTypes: [ReportBatchItemFailures]\n", "",
     "LoginEtlFunctionLoginQueueEvent: FunctionResponseTypes must include", 1),
    ("event: batch item failures not reported (replay queue)",
     "            FunctionResponseTypes: [ReportBatchItemFailures]\n", "",
     "LoginEtlFunctionReplayQueueEvent: FunctionResponseTypes must include", 2),
    ("event: unknown property",
     "MaximumBatchingWindowInSeconds: !Ref MaximumBatchingWindowInSeconds",
     "MaximumBatchingWindowInSecond: !Ref MaximumBatchingWindowInSeconds", "SAM translation failed"),
    # Queues and redrive
    ("redrive: misspelled deadLetterTargetArn",
     "deadLetterTargetArn: !GetAtt LoginDeadLetterQueue.Arn", "deadLetterTargetARN: !GetAtt LoginDeadLetterQueue.Arn",
     "LoginQueue: RedrivePolicy.deadLetterTargetArn must be the ARN of a queue", 1),
    ("partitions: the replay queue keeps messages longer than the maintenance assumes",
     "MessageRetentionPeriod: 604800 # 7 days", "MessageRetentionPeriod: 864000",
     "longer than the 7 days the partition maintenance assumes for login-replay-queue", 2),
    ("partitions: the maintenance without QUARANTINE_RETENTION_DAYS",
     "          # Checked against PARTITION_DAYS_BACK at start (how old a message can be).\n"
     "          QUARANTINE_RETENTION_DAYS: !Ref QuarantineRetentionDays\n", "",
     "PartitionMaintenanceFunction: reads PARTITION_DAYS_BACK without QUARANTINE_RETENTION_DAYS"),
    ("redrive: DLQ retention below 14 days",
     "MessageRetentionPeriod: 1209600 # 14 days", "MessageRetentionPeriod: 86400",
     "the dead-letter queue must keep messages 14 days"),
    ("redrive: DLQ keeps messages no longer than its source",
     "      QueueName: login-queue\n      VisibilityTimeout: !FindInMap [VisibilityTimeoutByFunctionTimeout, !Ref FunctionTimeout, Seconds]\n"
     "      MessageRetentionPeriod: 604800 # 7 days",
     "      QueueName: login-queue\n      VisibilityTimeout: !FindInMap [VisibilityTimeoutByFunctionTimeout, !Ref FunctionTimeout, Seconds]\n"
     "      MessageRetentionPeriod: 1209600",
     "not longer than its source LoginQueue"),
    ("polling rights: the function's role may not GetQueueUrl (every hide of the ride-out fails)",
     "sqs:ChangeMessageVisibility, sqs:GetQueueUrl]", "sqs:ChangeMessageVisibility]",
     "may not sqs:getqueueurl on LoginQueue"),
    ("polling rights: the function's role may not ChangeMessageVisibility",
     "sqs:ChangeMessageVisibility, sqs:GetQueueUrl]", "sqs:GetQueueUrl]",
     "may not sqs:changemessagevisibility on LoginReplayQueue"),
    ("queue: visibility timeout below 6x function timeout",
     '"30": { Seconds: 180 }', '"30": { Seconds: 60 }', "is less than 6 x function timeout 30 s"),
    ("queue: SQS-managed SSE instead of the queue key",
     "      MessageRetentionPeriod: 1209600 # 14 days\n      KmsMasterKeyId: !GetAtt QueueKey.Arn",
     "      MessageRetentionPeriod: 1209600 # 14 days\n      SqsManagedSseEnabled: true",
     "LoginDeadLetterQueue: must be encrypted with a KMS key of this template"),
    ("queue: replay queue in two queue policies",
     "Queues: [!Ref LoginQueue, !Ref LoginDeadLetterQueue]",
     "Queues: [!Ref LoginQueue, !Ref LoginDeadLetterQueue, !Ref LoginReplayQueue]",
     "LoginReplayQueue: is in 2 queue policies"),
    # The outage ride-out
    ("ride-out: backoff sum below 24 h (maxReceiveCount 8)",
     "    Default: 10\n    MinValue: 9", "    Default: 8\n    MinValue: 8",
     "LoginQueue: 8 receives hide a message 76500 s in all, less than 86400 s"),
    ("ride-out: maxReceiveCount 1",
     "maxReceiveCount: !Ref MaxReceiveCount", "maxReceiveCount: 1",
     "LoginQueue: 1 receives hide a message 300 s in all, less than 86400 s", 1),
    ("ride-out: backoff sum beyond the queue's retention",
     "      QueueName: login-queue\n      VisibilityTimeout: !FindInMap [VisibilityTimeoutByFunctionTimeout, !Ref FunctionTimeout, Seconds]\n"
     "      MessageRetentionPeriod: 604800 # 7 days",
     "      QueueName: login-queue\n      VisibilityTimeout: !FindInMap [VisibilityTimeoutByFunctionTimeout, !Ref FunctionTimeout, Seconds]\n"
     "      MessageRetentionPeriod: 150000",
     "LoginQueue: 10 receives hide a message 159300 s in all, beyond its MessageRetentionPeriod of 150000 s"),
    ("ride-out: one hide above SQS's 12 h",
     "    Default: 41400\n    MinValue: 1\n    MaxValue: 41400", "    Default: 50000\n    MinValue: 1\n    MaxValue: 50000",
     "VisibilityBackoffMaxSeconds default 50000 s exceeds SQS's visibility limit"),
    ("ride-out: a 12 h hide leaves no room for the time since the receive",
     "    Default: 41400\n    MinValue: 1\n    MaxValue: 41400", "    Default: 43200\n    MinValue: 1\n    MaxValue: 43200",
     "LoginQueue: a hide of 43200 s (VisibilityBackoffMaxSeconds default) plus the time since the receive"),
    ("ride-out: the cap's MaxValue lets a deploy ask SQS for too much",
     "    Default: 41400\n    MinValue: 1\n    MaxValue: 41400", "    Default: 41400\n    MinValue: 1\n    MaxValue: 43200",
     "LoginQueue: a hide of 43200 s (VisibilityBackoffMaxSeconds MaxValue) plus the time since the receive"),
    ("ride-out: backoff base below the queue's visibility timeout",
     "    Default: 300\n    MinValue: 1", "    Default: 120\n    MinValue: 1",
     "VisibilityBackoffBaseSeconds 120 s is below the queue's VisibilityTimeout 180 s"),
    ("ride-out: backoff base not wired to the function",
     "          VISIBILITY_BACKOFF_BASE_SECONDS: !Ref VisibilityBackoffBaseSeconds\n", "",
     "VISIBILITY_BACKOFF_BASE_SECONDS must be !Ref VisibilityBackoffBaseSeconds"),
    ("ride-out: backoff cap wired to a literal, not the parameter",
     "VISIBILITY_BACKOFF_MAX_SECONDS: !Ref VisibilityBackoffMaxSeconds", 'VISIBILITY_BACKOFF_MAX_SECONDS: "60"',
     "VISIBILITY_BACKOFF_MAX_SECONDS must be !Ref VisibilityBackoffMaxSeconds"),
    # The replay queue's senders
    ("replay: queue policy lets anyone send (no deny)",
     "          - Sid: OnlyTheVaultServiceSends\n            Effect: Deny\n",
     "          - Sid: OnlyTheVaultServiceSends\n            Effect: Allow\n",
     "LoginReplayQueue: its queue policy must deny sqs:SendMessage to every principal except VaultServiceRole"),
    ("replay: the deny excepts the function's role, not the vault service's",
     '"aws:PrincipalArn": !GetAtt VaultServiceRole.Arn', '"aws:PrincipalArn": !GetAtt FunctionRole.Arn',
     "LoginReplayQueue: its queue policy must deny sqs:SendMessage to every principal except VaultServiceRole"),
    ("replay: the function's REPLAY_QUEUE_ARN names login-queue",
     "REPLAY_QUEUE_ARN: !GetAtt LoginReplayQueue.Arn", "REPLAY_QUEUE_ARN: !GetAtt LoginQueue.Arn",
     "LoginQueue: no function sends replays to it"),
    # The PII key
    ("pii key: misspelled Effect",
     "          - Sid: FunctionUnwrapsProjectKeysOnly\n            Effect: Allow",
     "          - Sid: FunctionUnwrapsProjectKeysOnly\n            Effect: Alow", "cfn-lint: E3512:'Alow' is not one of"),
    ("pii key: function without encryption-context condition",
     '              "Null":\n                "kms:EncryptionContextKeys": "false"\n          - Sid: VaultServiceWrapsAndUnwrapsProjectKeysOnly',
     "          - Sid: VaultServiceWrapsAndUnwrapsProjectKeysOnly",
     "PiiKey: statement FunctionUnwrapsProjectKeysOnly allows ['kms:decrypt'] without requiring exactly the encryption context keys"),
    ("pii key: the function may unwrap the audit key",
     '"kms:EncryptionContext:purpose": ["index:ip", "index:device_id", data, erasure]',
     '"kms:EncryptionContext:purpose": ["index:ip", "index:device_id", data, erasure, audit]',
     "PiiKey: statement FunctionUnwrapsProjectKeysOnly lets FunctionRole use the key without limiting "
     "kms:EncryptionContext:purpose"),
    ("pii key: the function's Decrypt not limited by purpose",
     '                "kms:EncryptionContext:purpose": ["index:ip", "index:device_id", data, erasure]\n', "",
     "PiiKey: statement FunctionUnwrapsProjectKeysOnly lets FunctionRole use the key without limiting "
     "kms:EncryptionContext:purpose"),
    ("pii key: account root may decrypt",
     "Action: [kms:DescribeKey, kms:GetKeyPolicy, kms:GetKeyRotationStatus,",
     "Action: [kms:Decrypt, kms:DescribeKey, kms:GetKeyPolicy, kms:GetKeyRotationStatus,",
     "PiiKey: statement AccountReadsKeyMetadataOnly allows ['kms:decrypt'] without requiring", 1),
    ("pii key: account root may create grants",
     "Action: [kms:DescribeKey, kms:GetKeyPolicy, kms:GetKeyRotationStatus,",
     "Action: [kms:CreateGrant, kms:DescribeKey, kms:GetKeyPolicy, kms:GetKeyRotationStatus,",
     "PiiKey: statement AccountReadsKeyMetadataOnly gives the account root ['kms:creategrant']", 1),
    ("pii key: account root may rewrite the policy",
     "Action: [kms:DescribeKey, kms:GetKeyPolicy, kms:GetKeyRotationStatus,",
     "Action: [kms:Put*, kms:DescribeKey, kms:GetKeyPolicy, kms:GetKeyRotationStatus,",
     "PiiKey: statement AccountReadsKeyMetadataOnly gives the account root ['kms:put*']", 1),
    ("pii key: grants for anything but AWS resources not denied",
     '"kms:GrantIsForAWSResource": "false"', '"kms:GrantIsForAWSResource": "true"',
     "PiiKey: the key policy must deny kms:CreateGrant", 1),
    ("pii key: staff may decrypt",
     "          - Sid: FunctionUnwrapsProjectKeysOnly\n",
     "          - Sid: StaffDecrypts\n            Effect: Allow\n            Principal: { AWS: !GetAtt StaffRole.Arn }\n"
     "            Action: kms:Decrypt\n            Resource: \"*\"\n            Condition:\n"
     "              \"ForAllValues:StringEquals\":\n                \"kms:EncryptionContextKeys\": [app, purpose, key_version]\n"
     "              \"Null\":\n                \"kms:EncryptionContextKeys\": \"false\"\n"
     "          - Sid: FunctionUnwrapsProjectKeysOnly\n",
     "PiiKey: statement StaffDecrypts gives the staff role KMS actions ['kms:decrypt']"),
    ("pii key: any principal",
     "            Principal: { AWS: !Ref KeyAdminRoleArn }", '            Principal: "*"',
     "PiiKey: statement KeyAdministratorAdministersButNeverUsesTheKey allows any principal", 1),
    # The queue key
    ("queue key: function's grant without kms:ViaService",
     '            Principal: { AWS: !GetAtt FunctionRole.Arn }\n            Action: kms:Decrypt\n            Resource: "*"\n'
     '            Condition:\n              StringEquals:\n                "kms:ViaService": !Sub "sqs.${AWS::Region}.amazonaws.com"\n',
     '            Principal: { AWS: !GetAtt FunctionRole.Arn }\n            Action: kms:Decrypt\n            Resource: "*"\n'
     '            Condition:\n              StringEquals:\n',
     "QueueKey: statement FunctionReceivesFromSourceQueues allows ['kms:decrypt'] without StringEquals kms:ViaService"),
    ("queue key: producers' grant without the queue-arn encryption context",
     '                "kms:EncryptionContext:aws:sqs:arn": !Sub "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:login-queue"\n'
     "          - Sid: VaultServiceSendsToReplayQueue",
     "          - Sid: VaultServiceSendsToReplayQueue",
     "QueueKey: statement ProducersSendToLoginQueue allows ['kms:decrypt', 'kms:generatedatakey'] without StringEquals "
     "kms:EncryptionContext:aws:sqs:arn"),
    ("queue key: staff may decrypt",
     "          - Sid: FunctionReceivesFromSourceQueues\n",
     "          - Sid: StaffReadsTheQueues\n            Effect: Allow\n            Principal: { AWS: !GetAtt StaffRole.Arn }\n"
     "            Action: kms:Decrypt\n            Resource: \"*\"\n            Condition:\n              StringEquals:\n"
     "                \"kms:ViaService\": !Sub \"sqs.${AWS::Region}.amazonaws.com\"\n"
     "                \"kms:EncryptionContext:aws:sqs:arn\": !Sub \"arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:login-queue-dlq\"\n"
     "          - Sid: FunctionReceivesFromSourceQueues\n",
     "QueueKey: statement StaffReadsTheQueues lets the human role StaffRole use the queue key ['kms:decrypt']"),
    ("queue key: wildcard principal",
     "            Principal: { AWS: !Ref ProducerRoleArns }", '            Principal: { AWS: "*" }',
     "QueueKey: statement ProducersSendToLoginQueue allows any principal"),
    ("queue key: account root may decrypt",
     "Action: [kms:DescribeKey, kms:GetKeyPolicy, kms:GetKeyRotationStatus,",
     "Action: [kms:Decrypt, kms:DescribeKey, kms:GetKeyPolicy, kms:GetKeyRotationStatus,",
     "QueueKey: statement AccountReadsKeyMetadataOnly lets the account root use the queue key", 2),
    ("queue key: grants for anything but AWS resources not denied",
     '"kms:GrantIsForAWSResource": "false"', '"kms:GrantIsForAWSResource": "true"',
     "QueueKey: the key policy must deny kms:CreateGrant", 2),
    ("queue key: producers may encrypt to the replay queue",
     '"kms:EncryptionContext:aws:sqs:arn": !Sub "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:login-queue"\n'
     "          - Sid: VaultServiceSendsToReplayQueue",
     '"kms:EncryptionContext:aws:sqs:arn": !Sub "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:login-replay-queue"\n'
     "          - Sid: VaultServiceSendsToReplayQueue",
     "QueueKey: statement ProducersSendToLoginQueue lets [{'Ref': 'ProducerRoleArns'}] encrypt to the replay queue LoginReplayQueue"),
    ("queue key: the function cannot decrypt the replay queue it polls",
     '                  - !Sub "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:login-replay-queue"\n'
     "          # A message moved to the DLQ",
     "          # A message moved to the DLQ",
     "QueueKey: FunctionRole cannot decrypt LoginReplayQueue, which LoginEtlFunction polls"),
    # Who may invoke the vault service
    ("vault service: URL without IAM auth",
     "      FunctionUrlConfig:\n        AuthType: AWS_IAM", "      FunctionUrlConfig:\n        AuthType: NONE",
     "VaultServiceFunctionUrl: a function URL must use AuthType AWS_IAM"),
    ("vault service: URL invocable by anyone",
     "      Principal: !GetAtt StaffRole.Arn\n      FunctionUrlAuthType: AWS_IAM",
     "      Principal: \"*\"\n      FunctionUrlAuthType: AWS_IAM",
     "StaffInvokeVaultServiceUrl: lets * lambda:InvokeFunctionUrl the vault service"),
    ("vault service: lambda:InvokeFunction without InvokedViaFunctionUrl (a direct invoke)",
     "      InvokedViaFunctionUrl: true\n", "",
     "StaffInvokeVaultServiceViaUrl: lets {'Fn::GetAtt': ['StaffRole', 'Arn']} lambda:InvokeFunction the vault service", 1),
    # Who the staff are: the session name is the IAM user name
    ("staff role: a caller chooses its session name",
     '              StringEquals:\n                "sts:RoleSessionName": "${aws:username}"\n',
     '              StringLike:\n                "sts:RoleSessionName": "*"\n',
     "StaffRole: trust statement StaffAssumeItAsThemselves lets a caller choose its session name"),
    ("staff role: assumable by web identity",
     "            Action: sts:AssumeRole\n            Condition:\n              StringEquals:\n                \"sts:RoleSessionName\"",
     "            Action: [sts:AssumeRole, sts:AssumeRoleWithWebIdentity]\n            Condition:\n              StringEquals:\n                \"sts:RoleSessionName\"",
     "StaffRole: trust statement StaffAssumeItAsThemselves allows ['sts:assumerole', 'sts:assumerolewithwebidentity']"),
    ("staff role: the service trusts another role as staff",
     "          STAFF_ROLE_ARN: !GetAtt StaffRole.Arn", "          STAFF_ROLE_ARN: !GetAtt FunctionRole.Arn",
     "VaultServiceFunction: STAFF_ROLE_ARN must be the shipped StaffRole"),
    ("vault service: a schedule targets it",
     "      FunctionUrlConfig:\n        AuthType: AWS_IAM",
     "      FunctionUrlConfig:\n        AuthType: AWS_IAM\n      Events:\n        Nightly:\n          Type: Schedule\n"
     "          Properties:\n            Schedule: rate(1 day)",
     "VaultServiceFunctionNightly: a schedule, rule or subscription targets the vault service"),
    ("vault service: local identity set",
     "          REVEAL_BUDGET_PER_DAY: !Ref RevealBudgetPerDay",
     "          REVEAL_BUDGET_PER_DAY: !Ref RevealBudgetPerDay\n          PII_VAULT_LOCAL_IDENTITY: local:dev",
     "VaultServiceFunction: PII_VAULT_LOCAL_IDENTITY is for the local stack only"),
    # The scheduled purge job
    ("purge job: its role may decrypt with KMS",
     "                Resource: !Ref PurgeDatabaseSecretArn\n",
     "                Resource: !Ref PurgeDatabaseSecretArn\n              - Effect: Allow\n                Action: kms:Decrypt\n"
     "                Resource: !GetAtt QueueKey.Arn\n",
     "QuarantinePurgeRole: the role of scheduled QuarantinePurgeFunction allows ['kms:decrypt']"),
    ("purge job: its role may invoke the vault service",
     "                Resource: !Ref PurgeDatabaseSecretArn\n",
     "                Resource: !Ref PurgeDatabaseSecretArn\n              - Effect: Allow\n                Action: lambda:InvokeFunction\n"
     "                Resource: !GetAtt VaultServiceFunction.Arn\n",
     "QuarantinePurgeRole: allows ['lambda:invokefunction'] on the vault service"),
    # The scheduled partition maintenance
    ("partition job: its role may decrypt with KMS",
     "                Resource: !Ref PartitionDatabaseSecretArn\n",
     "                Resource: !Ref PartitionDatabaseSecretArn\n              - Effect: Allow\n                Action: kms:Decrypt\n"
     "                Resource: !GetAtt QueueKey.Arn\n",
     "PartitionMaintenanceRole: the role of scheduled PartitionMaintenanceFunction allows ['kms:decrypt']"),
    ("partition job: its role may send to a queue",
     "                Resource: !Ref PartitionDatabaseSecretArn\n",
     "                Resource: !Ref PartitionDatabaseSecretArn\n              - Effect: Allow\n                Action: sqs:SendMessage\n"
     "                Resource: '*'\n",
     "PartitionMaintenanceRole: the role of scheduled PartitionMaintenanceFunction allows ['sqs:sendmessage']"),
    ("partition job: logs in as the writer",
     "          DATABASE_SECRET_ARN: !Ref PartitionDatabaseSecretArn",
     "          DATABASE_SECRET_ARN: !Ref DatabaseSecretArn",
     "PartitionMaintenanceFunction: its DATABASE_SECRET_ARN is also that of ['LoginEtlFunction']"),
    # The scheduled vault expiry: it appends to the audit, so it may unwrap the audit key, nothing else
    ("vault expiry: its key statement also unwraps the data key",
     '"kms:EncryptionContext:purpose": audit', '"kms:EncryptionContext:purpose": [audit, data]',
     "PiiKey: statement VaultExpiryUnwrapsTheAuditKeyOnly lets VaultExpiryRole (a scheduled job that appends to the audit)"),
    ("vault expiry: it may generate keys",
     "            Principal: { AWS: !GetAtt VaultExpiryRole.Arn }\n            Action: kms:Decrypt",
     "            Principal: { AWS: !GetAtt VaultExpiryRole.Arn }\n            Action: [kms:Decrypt, kms:GenerateDataKey]",
     "lets VaultExpiryRole (a scheduled job that appends to the audit) ['kms:decrypt', 'kms:generatedatakey']"),
    ("vault expiry: it unwraps the data key instead of the audit key",
     '"kms:EncryptionContext:purpose": audit', '"kms:EncryptionContext:purpose": data',
     "PiiKey: statement VaultExpiryUnwrapsTheAuditKeyOnly names VaultExpiryRole, the role of scheduled VaultExpiryFunction (it may only"),
    ("vault expiry: the purge job is let unwrap the audit key",
     "            Principal: { AWS: !GetAtt VaultExpiryRole.Arn }\n            Action: kms:Decrypt",
     "            Principal: { AWS: !GetAtt QuarantinePurgeRole.Arn }\n            Action: kms:Decrypt",
     "PiiKey: statement VaultExpiryUnwrapsTheAuditKeyOnly lets QuarantinePurgeRole use the key without limiting"),
    ("vault expiry: its role may decrypt with KMS in IAM",
     "                Resource: !Ref ExpiryDatabaseSecretArn\n",
     "                Resource: !Ref ExpiryDatabaseSecretArn\n              - Effect: Allow\n                Action: kms:Decrypt\n"
     "                Resource: !GetAtt PiiKey.Arn\n",
     "VaultExpiryRole: the role of scheduled VaultExpiryFunction allows ['kms:decrypt']"),
    ("vault expiry: logs in as the vault service",
     "          DATABASE_SECRET_ARN: !Ref ExpiryDatabaseSecretArn",
     "          DATABASE_SECRET_ARN: !Ref VaultDatabaseSecretArn",
     "VaultExpiryFunction: its DATABASE_SECRET_ARN is also that of ['VaultServiceFunction']"),
    ("vault expiry: a retention of its own",
     "          VAULT_RETENTION_DAYS: !Ref VaultRetentionDays", '          VAULT_RETENTION_DAYS: "30"',
     "VaultExpiryFunction: VAULT_RETENTION_DAYS must be !Ref VaultRetentionDays", 2),
    # Dashboard and alarm metrics
    ("dashboard: a metric nothing emits",
     '["login-etl", "Written", "Function", "login-etl", {"label": "written"}]',
     '["login-etl", "NoSuchMetric", "Function", "login-etl", {"label": "written"}]',
     "login-etl metric NoSuchMetric is not emitted by the Rust sources"),
    ("dashboard: a SEARCH for a metric nothing emits",
     'MetricName=\\"RejectedByReason\\"', 'MetricName=\\"RejectedByReasons\\"',
     "login-etl metric RejectedByReasons is not emitted by the Rust sources"),
    ("dashboard: a Function dimension naming no function",
     '["login-etl", "QuarantinePurged", "Function", "quarantine-purge"',
     '["login-etl", "QuarantinePurged", "Function", "quarantine-purger"',
     "needs a Function dimension naming a function of this template"),
    ("dashboard: a namespace outside login-etl, AWS/SQS, AWS/Lambda",
     '["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", "${LoginDeadLetterQueue.QueueName}"',
     '["AWS/EC2", "ApproximateNumberOfMessagesVisible", "QueueName", "${LoginDeadLetterQueue.QueueName}"',
     "namespace AWS/EC2 is neither login-etl nor one of"),
    ("dashboard: an SQS metric on a queue of no template",
     '"QueueName", "${LoginDeadLetterQueue.QueueName}"', '"QueueName", "someone-elses-queue"',
     "AWS/SQS ApproximateNumberOfMessagesVisible needs QueueName naming one of this template's"),
    ("alarm: a metric nothing emits",
     "      MetricName: RevealedValues", "      MetricName: RevealedValue",
     "RevealVolumeAlarm: login-etl metric RevealedValue is not emitted"),
]


def load_lint():
    sys.dont_write_bytecode = True  # no scripts/__pycache__ in the work tree
    spec = importlib.util.spec_from_file_location("lint_template", LINT_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def full_lint(text: str) -> str:
    """The whole lint (cfn-lint included) as `make lint-template` runs it; its output."""
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "template.yaml"
        path.write_text(text)
        result = subprocess.run(LINT + [str(path)], capture_output=True, text=True)
        return f"exit {result.returncode}\n{result.stdout}{result.stderr}"


def broken(original: str, find: str, replace: str, occurrence=None):
    """The template with one occurrence of `find` replaced, or None if that is ambiguous."""
    count = original.count(find)
    if occurrence is None:
        return original.replace(find, replace) if count == 1 else None
    if count < occurrence:
        return None
    at = -1
    for _ in range(occurrence):
        at = original.index(find, at + 1)
    return original[:at] + replace + original[at + len(find):]


def main() -> int:
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    # The translator warns about its own usage metrics when it runs many times in one process.
    logging.getLogger("samtranslator").setLevel(logging.ERROR)
    lint = load_lint()
    emitted = lint.emitted_metrics()
    original = (ROOT / "template.yaml").read_text()
    results = {}
    slow = []
    for case in BREAKS:
        name, find, replace, expect = case[:4]
        text = broken(original, find, replace, case[4] if len(case) > 4 else None)
        if text is None:
            results[name] = (False, "the text to break is not in template.yaml as the case says")
            continue
        problems, _, _ = lint.lint(text, with_cfn_lint=False, emitted=emitted)
        found = [p for p in problems if expect in p]
        if found:
            results[name] = (True, found[0])
        else:
            slow.append((name, text, expect))
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        shipped = pool.submit(full_lint, original)
        runs = {name: (pool.submit(full_lint, text), expect) for name, text, expect in slow}
        for name, (future, expect) in runs.items():
            output = future.result()
            found = [line for line in output.splitlines() if expect in line]
            results[name] = (True, found[0]) if found else (False, f"expected a problem with {expect!r}; got:\n{output}")
        shipped_output = shipped.result()

    passed = failed = 0
    if shipped_output.startswith("exit 0"):
        passed += 1
        print("ok   shipped template lints clean")
    else:
        failed += 1
        print(f"FAIL shipped template does not lint clean:\n{shipped_output}")
    for name, *_ in BREAKS:
        good, detail = results[name]
        passed, failed = (passed + 1, failed) if good else (passed, failed + 1)
        print(f"{'ok  ' if good else 'FAIL'} {name}: {detail}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
