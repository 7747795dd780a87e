-- A reporter's due-deliveries query (data/reports.rs::due_deliveries) on a
-- queue of 10,000 pending messages grown while its service was down: every
-- build's first message waits for its retry, its second behind it.
-- Run: sqlite3 :memory: < bench/sql/due_deliveries_sqlite.sql
CREATE TABLE report_deliveries (id INTEGER PRIMARY KEY AUTOINCREMENT, reporter TEXT NOT NULL,
  order_key TEXT NOT NULL, body TEXT, state TEXT NOT NULL, next_attempt_at REAL NOT NULL);
CREATE INDEX idx_report_deliveries_queue ON report_deliveries (reporter, state, id);
WITH RECURSIVE i(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM i WHERE n < 9999)
INSERT INTO report_deliveries (reporter, order_key, body, state, next_attempt_at)
  SELECT 'a', 'build:' || (n / 2), printf('%.1500c', 'x'), 'pending', CASE WHEN n % 2 = 0 THEN 10 ELSE 1 END FROM i;
.timer on
-- migration 13's index only
SELECT count(*) FROM (SELECT id FROM report_deliveries WHERE reporter = 'a' AND state = 'pending'
  AND next_attempt_at <= 5 AND NOT EXISTS (SELECT 1 FROM report_deliveries AS earlier
  WHERE earlier.reporter = 'a' AND earlier.state = 'pending' AND earlier.order_key = report_deliveries.order_key
  AND earlier.id < report_deliveries.id AND earlier.next_attempt_at > 5) ORDER BY id LIMIT 500);
-- with migration 14's
CREATE INDEX idx_report_deliveries_order_key ON report_deliveries (reporter, state, order_key, id);
SELECT count(*) FROM (SELECT id FROM report_deliveries WHERE reporter = 'a' AND state = 'pending'
  AND next_attempt_at <= 5 AND NOT EXISTS (SELECT 1 FROM report_deliveries AS earlier
  WHERE earlier.reporter = 'a' AND earlier.state = 'pending' AND earlier.order_key = report_deliveries.order_key
  AND earlier.id < report_deliveries.id AND earlier.next_attempt_at > 5) ORDER BY id LIMIT 500);
