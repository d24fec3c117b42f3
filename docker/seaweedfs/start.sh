#!/bin/sh
# SeaweedFS for docker-compose (service `s3`): one `weed server` with the S3 gateway on port 8333,
# whose only identity is the key pair in S3_ACCESS_KEY / S3_SECRET_KEY (the api, worker and bootstrap
# get the same pair as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY). Anonymous requests are refused.
set -eu
: "${S3_ACCESS_KEY:?set S3_ACCESS_KEY}"
: "${S3_SECRET_KEY:?set S3_SECRET_KEY}"
umask 077
cat > /tmp/s3.json <<JSON
{
  "identities": [
    {
      "name": "flame",
      "credentials": [{"accessKey": "${S3_ACCESS_KEY}", "secretKey": "${S3_SECRET_KEY}"}],
      "actions": ["Admin", "Read", "List", "Tagging", "Write"]
    }
  ]
}
JSON
exec weed server -dir=/data -ip.bind=0.0.0.0 -s3 -s3.port=8333 -s3.config=/tmp/s3.json
