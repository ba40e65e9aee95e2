#!/bin/sh
# One "host" of the three-host layout of docs/deploy.md, in one container: a data node
# (primary or replica), a Sentinel, and a master in the foreground. Killing the container
# (docker compose kill host1) is a host failure.
set -eu
D=/var/lib/jobq
KEYS=/keys/acl.json            # the deployment's passwords, shared by the three hosts
FIRST=172.28.0.11:6380         # the first primary (host1)
ASK="--sentinel 172.28.0.11:26379 --sentinel 172.28.0.12:26379 --sentinel 172.28.0.13:26379"

if [ "$JOBQ_FIRST" = yes ]; then
    # Writes $KEYS on its first start; afterwards asks the Sentinels (a restarted old
    # primary rejoins as a replica).
    jobq server start --data-dir $D --listen "$IP:6380" --acl-file $KEYS $ASK
else
    i=0
    while [ ! -s $KEYS ] && [ $i -lt 120 ]; do sleep 0.5; i=$((i + 1)); done
    jobq server start --data-dir $D --listen "$IP:6380" --replica-of $FIRST --acl-file $KEYS $ASK
fi
jobq server sentinel start --data-dir $D --listen "$IP:26379" --monitor $FIRST \
    --service jobq --quorum 2 --acl-file $KEYS

# The master finds the primary through the Sentinels, as the admin role.
JOBQ_URL=$(python3 - "$KEYS" <<'PY'
import json, sys
from urllib.parse import quote
pw = json.load(open(sys.argv[1]))["passwords"]
hosts = ",".join(f"172.28.0.1{i}:26379" for i in (1, 2, 3))
print(f"redis+sentinel://jobq-admin:{quote(pw['admin'], safe='')}@{hosts}/jobq"
      f"?sentinel_password={quote(pw['discovery'], safe='')}")
PY
)
export JOBQ_URL
exec jobq master --http 0.0.0.0:8000 --token-file /keys/http-token
