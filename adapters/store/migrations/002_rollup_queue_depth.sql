-- Per-minute rollups written live by operate carry the queue depth: calls still awaiting an answer
-- at the minute's end (the seed's function_queue_depth). Older rows read as 0.
ALTER TABLE metrics_minute ADD COLUMN queue_depth INTEGER NOT NULL DEFAULT 0;
