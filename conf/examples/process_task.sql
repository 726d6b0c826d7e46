-- process_task.sql: an example function for taskworkerd's SQL handler.
--
--   handler: {
--     type = "sql";
--     statement = "SELECT process_task($1)";
--   };
--
-- taskworkerd runs the statement with the task id as $1 (bigint), in one
-- transaction with the UPDATE that sets the row's status to
-- completed_status: the work and the status commit together, or neither
-- does. An error (here the RAISE, SQLSTATE P0001) rolls both back and fails
-- the attempt with the reason "SQLSTATE P0001: <message>"; it is retried
-- after a backoff (retry.attempts runs in all), then the row gets
-- postgres.failed_status.
--
-- Load it with: psql tasks -f process_task.sql (after schema.sql).

CREATE TABLE IF NOT EXISTS task_log (
	task_id   bigint      NOT NULL,
	name      text        NOT NULL,
	result    text        NOT NULL,
	logged_at timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION process_task(task_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
	task_name text;
BEGIN
	SELECT t.name INTO task_name FROM task t WHERE t.id = task_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'task %: no such row', task_id;
	END IF;

	-- The work: a row in task_log.
	INSERT INTO task_log (task_id, name, result)
	VALUES (task_id, task_name, upper(task_name));

	-- Some inputs cannot be processed. The exception undoes the INSERT
	-- above as well: nothing of a failed attempt is committed.
	IF task_name LIKE '%fail%' THEN
		RAISE EXCEPTION 'task %: cannot process %', task_id, quote_literal(task_name);
	END IF;
END
$$;
