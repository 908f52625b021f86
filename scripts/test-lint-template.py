#!/usr/bin/env python3
"""Proves that `make lint-template` catches broken templates: each case breaks a copy of
template.yaml in one place and expects lint-template.py to fail; the shipped template
must pass. Prints 'N passed, N failed'."""
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
LINT = [sys.executable, str(ROOT / "scripts/lint-template.py")]

# (name, text to find, replacement)
BREAKS = [
    ("event: misspelled ReportBatchItemFailures",
     "FunctionResponseTypes: [ReportBatchItemFailures]", "FunctionResponseTypes: [ReportBatchItemFailure]"),
    ("event: BatchSize out of range",
     "BatchSize: !Ref BatchSize", "BatchSize: 20000"),
    ("event: batch item failures not reported",
     "            FunctionResponseTypes: [ReportBatchItemFailures]\n", ""),
    ("event: unknown property",
     "MaximumBatchingWindowInSeconds: !Ref MaximumBatchingWindowInSeconds",
     "MaximumBatchingWindowInSecond: !Ref MaximumBatchingWindowInSeconds"),
    ("redrive: maxReceiveCount below 5",
     "maxReceiveCount: !Ref MaxReceiveCount", "maxReceiveCount: 1"),
    ("redrive: misspelled deadLetterTargetArn",
     "deadLetterTargetArn: !GetAtt LoginDeadLetterQueue.Arn", "deadLetterTargetARN: !GetAtt LoginDeadLetterQueue.Arn"),
    ("redrive: DLQ retention below 14 days",
     "MessageRetentionPeriod: 1209600 # 14 days", "MessageRetentionPeriod: 86400"),
    ("queue: visibility timeout below 6x function timeout",
     '"30": { Seconds: 180 }', '"30": { Seconds: 60 }'),
    ("key policy: misspelled Effect",
     "          - Sid: FunctionUnwrapsProjectKeysOnly\n            Effect: Allow",
     "          - Sid: FunctionUnwrapsProjectKeysOnly\n            Effect: Alow"),
    ("key policy: function without encryption-context condition",
     '              "Null":\n                "kms:EncryptionContextKeys": "false"\n          - Sid: VaultServiceWrapsAndUnwrapsProjectKeysOnly',
     "          - Sid: VaultServiceWrapsAndUnwrapsProjectKeysOnly"),
    ("key policy: account root may decrypt",
     "Action: [kms:DescribeKey, kms:GetKeyPolicy, kms:GetKeyRotationStatus,",
     "Action: [kms:Decrypt, kms:DescribeKey, kms:GetKeyPolicy, kms:GetKeyRotationStatus,"),
    ("key policy: account root may create grants",
     "Action: [kms:DescribeKey, kms:GetKeyPolicy, kms:GetKeyRotationStatus,",
     "Action: [kms:CreateGrant, kms:DescribeKey, kms:GetKeyPolicy, kms:GetKeyRotationStatus,"),
    ("key policy: account root may rewrite the policy",
     "Action: [kms:DescribeKey, kms:GetKeyPolicy, kms:GetKeyRotationStatus,",
     "Action: [kms:Put*, kms:DescribeKey, kms:GetKeyPolicy, kms:GetKeyRotationStatus,"),
    ("key policy: grants for anything but AWS resources not denied",
     '"kms:GrantIsForAWSResource": "false"', '"kms:GrantIsForAWSResource": "true"'),
    ("key policy: staff may decrypt",
     "          - Sid: FunctionUnwrapsProjectKeysOnly\n",
     "          - Sid: StaffDecrypts\n            Effect: Allow\n            Principal: { AWS: !Ref StaffRoleArn }\n"
     "            Action: kms:Decrypt\n            Resource: \"*\"\n            Condition:\n"
     "              \"ForAllValues:StringEquals\":\n                \"kms:EncryptionContextKeys\": [app, purpose, key_version]\n"
     "              \"Null\":\n                \"kms:EncryptionContextKeys\": \"false\"\n"
     "          - Sid: FunctionUnwrapsProjectKeysOnly\n"),
    ("vault service: URL without IAM auth",
     "      FunctionUrlConfig:\n        AuthType: AWS_IAM", "      FunctionUrlConfig:\n        AuthType: NONE"),
    ("vault service: URL invocable by anyone",
     "      Principal: !Ref StaffRoleArn\n      FunctionUrlAuthType: AWS_IAM",
     "      Principal: \"*\"\n      FunctionUrlAuthType: AWS_IAM"),
    ("vault service: local identity set",
     "          REVEAL_BUDGET_PER_DAY: !Ref RevealBudgetPerDay",
     "          REVEAL_BUDGET_PER_DAY: !Ref RevealBudgetPerDay\n          PII_VAULT_LOCAL_IDENTITY: local:dev"),
    ("key policy: any principal",
     "            Principal: { AWS: !Ref KeyAdminRoleArn }", '            Principal: "*"'),
]


def lint(text: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "template.yaml"
        path.write_text(text)
        return subprocess.run(LINT + [str(path)], capture_output=True, text=True)


def main() -> int:
    original = (ROOT / "template.yaml").read_text()
    passed = failed = 0
    result = lint(original)
    if result.returncode == 0:
        passed += 1
    else:
        failed += 1
        print(f"FAIL shipped template does not lint clean:\n{result.stdout}{result.stderr}")
    for name, find, replace in BREAKS:
        if original.count(find) != 1:
            failed += 1
            print(f"FAIL {name}: the text to break is not in template.yaml exactly once")
            continue
        result = lint(original.replace(find, replace))
        if result.returncode != 0:
            passed += 1
            reason = [line for line in result.stdout.splitlines() if "problem" not in line][:1]
            print(f"ok   {name}: {reason[0] if reason else 'rejected'}")
        else:
            failed += 1
            print(f"FAIL {name}: lint passed a broken template")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
