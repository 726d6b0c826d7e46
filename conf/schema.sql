-- schema.sql: the default task table taskworkerd works on.
-- Producers INSERT a row, then RPUSH its id onto a Redis queue.

CREATE TABLE IF NOT EXISTS task (
	id     bigserial PRIMARY KEY,
	name   varchar(255) NOT NULL,
	status varchar(255) NOT NULL DEFAULT 'pending'
);
