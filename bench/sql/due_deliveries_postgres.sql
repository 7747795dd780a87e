-- The same as due_deliveries_sqlite.sql on PostgreSQL, with 50,000
-- delivered rows beside the 10,000 pending ones, in a scratch schema.
-- Run: psql -h 127.0.0.1 -U postgres test -f bench/sql/due_deliveries_postgres.sql
DROP SCHEMA IF EXISTS due_bench CASCADE;
CREATE SCHEMA due_bench;
SET search_path = due_bench;
CREATE TABLE report_deliveries (id BIGSERIAL PRIMARY KEY, reporter TEXT NOT NULL,
  order_key TEXT NOT NULL, body TEXT, state TEXT NOT NULL, next_attempt_at DOUBLE PRECISION NOT NULL);
CREATE INDEX idx_report_deliveries_queue ON report_deliveries (reporter, state, id);
INSERT INTO report_deliveries (reporter, order_key, body, state, next_attempt_at)
  SELECT 'a', 'build:' || (i / 2), repeat('x', 1500), 'pending', CASE WHEN i % 2 = 0 THEN 10 ELSE 1 END
  FROM generate_series(0, 9999) i;
INSERT INTO report_deliveries (reporter, order_key, body, state, next_attempt_at)
  SELECT 'a', 'build:d' || (i / 2), repeat('x', 1500), 'delivered', 1 FROM generate_series(0, 49999) i;
ANALYZE report_deliveries;
\timing on
-- migration 13's index only
SELECT count(*) FROM (SELECT id FROM report_deliveries WHERE reporter = 'a' AND state = 'pending'
  AND next_attempt_at <= 5 AND NOT EXISTS (SELECT 1 FROM report_deliveries AS earlier
  WHERE earlier.reporter = 'a' AND earlier.state = 'pending' AND earlier.order_key = report_deliveries.order_key
  AND earlier.id < report_deliveries.id AND earlier.next_attempt_at > 5) ORDER BY id LIMIT 500) x;
-- with migration 14's
CREATE INDEX idx_report_deliveries_order_key ON report_deliveries (reporter, state, order_key, id);
ANALYZE report_deliveries;
SELECT count(*) FROM (SELECT id FROM report_deliveries WHERE reporter = 'a' AND state = 'pending'
  AND next_attempt_at <= 5 AND NOT EXISTS (SELECT 1 FROM report_deliveries AS earlier
  WHERE earlier.reporter = 'a' AND earlier.state = 'pending' AND earlier.order_key = report_deliveries.order_key
  AND earlier.id < report_deliveries.id AND earlier.next_attempt_at > 5) ORDER BY id LIMIT 500) x;
\timing off
DROP SCHEMA due_bench CASCADE;
