# moto_credentials.py: makes an IAM user with an S3 policy and an access key on a moto server
# started with INITIAL_NO_AUTH_ACTION_COUNT=3 (these three calls are the unauthenticated ones;
# every later request must carry a valid SigV4 signature of that key, which moto then checks).
# Prints "ACCESS_KEY_ID SECRET_ACCESS_KEY". Usage: moto_credentials.py http://127.0.0.1:PORT
import json
import sys

import boto3

endpoint = sys.argv[1]
iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                   aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
iam.create_user(UserName="n3rlhf-test")
iam.put_user_policy(UserName="n3rlhf-test", PolicyName="s3-all", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
key = iam.create_access_key(UserName="n3rlhf-test")["AccessKey"]
print(key["AccessKeyId"], key["SecretAccessKey"])
