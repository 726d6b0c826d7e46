#!/bin/sh
# process-task.sh: an example exec handler for taskworkerd.
#
#   handler: {
#     type = "exec";
#     command = ["/usr/share/taskworkerd/examples/process-task.sh"];
#   };
#   postgres: { columns = ["name"]; };
#
# taskworkerd runs it once per task, without a shell, with the task id as
# its last argument and stdin from /dev/null. The row comes in the
# environment: TASK_ID, TASK_QUEUE, TASK_ATTEMPT (1 on the first run) and
# TASK_NAME (one TASK_<COLUMN> for each of postgres.columns; a NULL leaves
# it unset). Every line written to stdout or stderr goes to the daemon's
# log as "task ID: LINE".
#
# Exit 0 and the row is completed. Any other exit fails this attempt: it
# is retried after a backoff (retry.attempts runs in all), then the row
# gets postgres.failed_status and the id goes to QUEUE:dead with the
# reason ("exit 1").
set -eu

id=${1:?usage: process-task.sh TASK_ID}
name=${TASK_NAME-}

case $name in
*fail*)
	echo "task $id: cannot process \"$name\"" >&2
	exit 1
	;;
esac

# The work: here, only a line in the log.
echo "task $id processed: \"$name\" (attempt ${TASK_ATTEMPT:-1}, queue ${TASK_QUEUE:-?})"
