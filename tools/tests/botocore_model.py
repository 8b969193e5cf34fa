"""The maximal replication configurations, checked against botocore's own S3 service model and
round-tripped through an S3 endpoint with boto3 (run by tools/tests/cli_run.rs).

Usage: python botocore_model.py ENDPOINT BUCKET (credentials from AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY); python botocore_model.py --write-documents DIR writes the documents as
`DIR/document-N.json` for the AWS CLI.

1. Every member of `PutBucketReplication`'s `ReplicationConfiguration` in the installed model
   (every structure member, recursively, lists included) must appear in one of the documents
   below; a member S3 adds in a later model fails the run until s3repl and this list learn it.
2. Each document is put with boto3 (which serializes it from the same model), read back with
   `GetBucketReplication`, and must come back unchanged.
Prints one JSON line: {"botocore": version, "members": N, "documents": N}.
"""

import json
import sys

import boto3
import botocore
import botocore.session
from botocore.config import Config

ROLE = "arn:aws:iam::123456789012:role/replication"
DST = "arn:aws:s3:::dst-bucket"
KMS = "arn:aws:kms:us-east-1:123456789012:key/mrk-1234abcd"


def tag(key, value):
    return {"Key": key, "Value": value}


def v2_rule(rule_id, priority, rule_filter):
    return {
        "ID": rule_id,
        "Priority": priority,
        "Filter": rule_filter,
        "Status": "Enabled",
        "SourceSelectionCriteria": {
            "SseKmsEncryptedObjects": {"Status": "Enabled"},
            "ReplicaModifications": {"Status": "Enabled"},
        },
        "ExistingObjectReplication": {"Status": "Enabled"},
        "Destination": {
            "Bucket": DST,
            "Account": "111122223333",
            "StorageClass": "STANDARD_IA",
            "AccessControlTranslation": {"Owner": "Destination"},
            "EncryptionConfiguration": {
                "ReplicaKmsKeyID": KMS,
                "UseSourceMultiRegionKey": {"Status": "Enabled"},
            },
            "ReplicationTime": {"Status": "Enabled", "Time": {"Minutes": 15}},
            "Metrics": {"Status": "Enabled", "EventThreshold": {"Minutes": 15}},
        },
        "DeleteMarkerReplication": {"Status": "Disabled"},
    }


# One filter form per rule: a Filter holds exactly one of Prefix, Tag, And and Not.
FILTERS = [
    {
        "And": {
            "Prefix": "logs/",
            "Tags": [tag("team", "storage"), tag("class", "c3")],
            "Not": {
                "Or": {
                    "Prefixes": ["logs/tmp/", "logs/cache/"],
                    "Tags": [tag("env", "dev"), tag("env", "test")],
                }
            },
        }
    },
    {"And": {"Prefix": "data/", "Not": {"Prefix": "data/tmp/"}}},
    {"And": {"Prefix": "bin/", "Not": {"Tag": tag("class", "secret")}}},
    {"Not": {"Prefix": "scratch/"}},
    {"Not": {"Tag": tag("class", "secret")}},
    {"Not": {"Or": {"Prefixes": ["a/", "b/"], "Tags": [tag("k", "1"), tag("k", "2")]}}},
    {"Tag": tag("team", "backup")},
    {"Prefix": "docs/"},
]

DOCUMENTS = [
    {"Role": ROLE, "Rules": [v2_rule(f"rule-{i}", i + 1, f) for i, f in enumerate(FILTERS)]},
    # The V1 schema (rule-level Prefix) cannot be mixed with V2 rules: a document of its own.
    {
        "Role": ROLE,
        "Rules": [
            {
                "ID": "v1",
                "Prefix": "old/",
                "Status": "Enabled",
                "Destination": {"Bucket": DST, "StorageClass": "STANDARD"},
            }
        ],
    },
]


def model_paths(shape, prefix, out):
    """Every member path of `shape`, lists as `[]`."""
    if shape.type_name == "structure":
        for name, member in shape.members.items():
            path = f"{prefix}.{name}"
            out.add(path)
            model_paths(member, path, out)
    elif shape.type_name == "list":
        model_paths(shape.member, prefix + "[]", out)
    return out


def used_paths(value, prefix, out):
    """Every member path a document uses."""
    if isinstance(value, dict):
        for name, member in value.items():
            path = f"{prefix}.{name}"
            out.add(path)
            used_paths(member, path, out)
    elif isinstance(value, list):
        for item in value:
            used_paths(item, prefix + "[]", out)
    return out


def main():
    if sys.argv[1] == "--write-documents":
        # For the AWS CLI's turn: one `--replication-configuration` file per document.
        for i, document in enumerate(DOCUMENTS):
            with open(f"{sys.argv[2]}/document-{i}.json", "w", encoding="utf-8") as f:
                json.dump(document, f)
        print(json.dumps({"documents": len(DOCUMENTS)}))
        return
    endpoint, bucket = sys.argv[1], sys.argv[2]
    model = botocore.session.get_session().get_service_model("s3")
    shape = model.operation_model("PutBucketReplication").input_shape.members[
        "ReplicationConfiguration"
    ]
    wanted = model_paths(shape, "", set())
    used = set()
    for document in DOCUMENTS:
        used_paths(document, "", used)
    missing = sorted(wanted - used)
    unknown = sorted(used - wanted)
    if missing or unknown:
        print(
            json.dumps({"botocore": botocore.__version__, "missing": missing, "unknown": unknown}),
            file=sys.stderr,
        )
        sys.exit(2)
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    for document in DOCUMENTS:
        client.put_bucket_replication(Bucket=bucket, ReplicationConfiguration=document)
        back = client.get_bucket_replication(Bucket=bucket)["ReplicationConfiguration"]
        if back != document:
            print(json.dumps({"sent": document, "got": back}, indent=1), file=sys.stderr)
            sys.exit(3)
    print(
        json.dumps(
            {"botocore": botocore.__version__, "members": len(wanted), "documents": len(DOCUMENTS)}
        )
    )


if __name__ == "__main__":
    main()
