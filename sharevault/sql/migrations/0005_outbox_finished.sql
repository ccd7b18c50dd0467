-- Settled reports are deleted OUTBOX_KEEP seconds after they finished (worker/outbox.py): this
-- index finds them without reading the pending ones or the whole table.
CREATE INDEX outbox_finished ON outbox (finished_at) WHERE status <> 'pending';
