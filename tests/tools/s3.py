"""What a user does with S3 outside Nimbus, for the end-to-end tests: boto3 against the test's
SeaweedFS. Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.

    s3.py ENDPOINT mb BUCKET                  create the bucket (waits for the server to take it)
    s3.py ENDPOINT put BUCKET KEY FILE        upload a file (boto3's managed, multipart upload)
    s3.py ENDPOINT size BUCKET KEY            print the object's size, or -1 when there is none
    s3.py ENDPOINT uploads BUCKET             print the number of unfinished multipart uploads
"""

import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError


def client(endpoint):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 10, "mode": "standard"}),
    )


def main(endpoint, command, *args):
    s3 = client(endpoint)
    if command == "mb":
        deadline = time.monotonic() + 20
        while True:
            try:
                s3.create_bucket(Bucket=args[0])
                return
            except ClientError as e:
                if e.response["Error"]["Code"] in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    return
                if time.monotonic() > deadline:
                    raise
            except EndpointConnectionError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)
    elif command == "put":
        bucket, key, path = args
        s3.upload_file(path, bucket, key)
    elif command == "size":
        bucket, key = args
        try:
            print(s3.head_object(Bucket=bucket, Key=key)["ContentLength"])
        except ClientError as e:
            if e.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                print(-1)
            else:
                raise
    elif command == "uploads":
        answer = s3.list_multipart_uploads(Bucket=args[0])
        print(len(answer.get("Uploads", [])))
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main(*sys.argv[1:])
