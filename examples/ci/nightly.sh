#!/bin/sh
# Nightly hardware run: submit every job file of a directory to the lab
# daemon at once, wait for them all, keep each job's JUnit report and
# summary, and exit with the worst outcome.
#
#   LABCTL_SERVER=http://lab1:8470 LABCTL_TOKEN=... examples/ci/nightly.sh jobs/ out/
#
# The daemon queues the jobs and runs them as devices come free (job
# priority first, then first come first served). Images named by a path in
# a job file are read by the daemon on its own host: run this where the
# daemon sees the same files, or give the images as http(s) URLs.
#
# Exit status: 0 every job complete, 1 a test failed, 2 a job was
# incomplete (the lab went wrong), 3 a job was canceled or ran out of time
# (TIMEOUT, default 2h), 64 usage; the highest of these wins.
set -u

jobs_dir=${1:-}
out=${2:-out}
if [ -z "$jobs_dir" ] || [ ! -d "$jobs_dir" ]; then
	echo "usage: $0 JOBS-DIR [OUT-DIR]" >&2
	exit 64
fi
: "${LABCTL_SERVER:?set LABCTL_SERVER to the lab daemon, e.g. http://lab1:8470}"
: "${LABCTL_TOKEN:?set LABCTL_TOKEN to a token of the lab's [[server.tokens]]}"
export LABCTL_SERVER LABCTL_TOKEN
timeout=${TIMEOUT:-2h}
mkdir -p "$out" || exit 64

# Submit everything at once; each labctl waits for its own job.
pids=""
for job in "$jobs_dir"/*.toml; do
	[ -e "$job" ] || { echo "no job files in $jobs_dir" >&2; exit 64; }
	name=$(basename "$job" .toml)
	labctl submit --wait --timeout "$timeout" --junit "$out/$name.junit.xml" "$job" >"$out/$name.txt" 2>&1 &
	pids="$pids $!:$name"
done

status=0
for entry in $pids; do
	pid=${entry%%:*}
	name=${entry#*:}
	wait "$pid"
	rc=$?
	case $rc in
	0) outcome=complete ;;
	1) outcome=failed ;;
	2) outcome=incomplete ;;
	3) outcome="canceled or timed out" ;;
	*) outcome="labctl error $rc" ;;
	esac
	echo "$name: $outcome ($out/$name.txt)"
	[ "$rc" -gt "$status" ] && status=$rc
done
exit "$status"
