-- 005-report: what `etrnctl summary`, `domains`, `stats` and `check` need
-- to answer in time independent of the queue's size (issue 9: 5.4 s at a
-- million messages when they counted by scanning). Applied once by
-- relayd/store.c after 004. Never edit a file that has shipped: add the
-- next number.
--
-- domain_usage (004) gains the messages of each domain that have a queued
-- (state 0) and a held (state 1, etrnctl hold) recipient there. Flush needs
-- the first (a domain whose mail is all held has nothing to start), domains
-- shows the second. Both are kept, as 004's columns, by triggers in every
-- transaction that changes a recipient.
ALTER TABLE domain_usage ADD COLUMN queued_messages INTEGER NOT NULL DEFAULT 0;
ALTER TABLE domain_usage ADD COLUMN held_messages INTEGER NOT NULL DEFAULT 0;

UPDATE domain_usage SET
    queued_messages = (SELECT count(DISTINCT message_id) FROM recipient AS r
                       WHERE r.domain = domain_usage.domain AND r.state = 0),
    held_messages = (SELECT count(DISTINCT message_id) FROM recipient AS r
                     WHERE r.domain = domain_usage.domain AND r.state = 1);

-- A recipient added: its message counts in its state's column if it is the
-- message's first recipient there in that state. SQLite does not promise an
-- order among triggers, so this one makes the row itself as 004's does.
CREATE TRIGGER domain_usage_state_insert AFTER INSERT ON recipient
BEGIN
    INSERT INTO domain_usage (domain) VALUES (NEW.domain) ON CONFLICT (domain) DO NOTHING;
    UPDATE domain_usage SET
        queued_messages = queued_messages + (NEW.state = 0),
        held_messages = held_messages + (NEW.state = 1)
    WHERE domain = NEW.domain
      AND NOT EXISTS (SELECT 1 FROM recipient
                      WHERE message_id = NEW.message_id AND domain = NEW.domain
                        AND state = NEW.state AND id <> NEW.id);
END;

-- A recipient removed: its message stops counting in its state's column
-- with its last recipient there in that state.
CREATE TRIGGER domain_usage_state_delete AFTER DELETE ON recipient
BEGIN
    UPDATE domain_usage SET
        queued_messages = queued_messages - (OLD.state = 0),
        held_messages = held_messages - (OLD.state = 1)
    WHERE domain = OLD.domain
      AND NOT EXISTS (SELECT 1 FROM recipient
                      WHERE message_id = OLD.message_id AND domain = OLD.domain
                        AND state = OLD.state);
END;

-- Held or released: both of the above at once. Delivery's updates (attempts,
-- next_attempt, last_reply) do not name state and do not fire this.
CREATE TRIGGER domain_usage_state_update AFTER UPDATE OF state ON recipient
WHEN OLD.state <> NEW.state
BEGIN
    UPDATE domain_usage SET
        queued_messages = queued_messages - (OLD.state = 0),
        held_messages = held_messages - (OLD.state = 1)
    WHERE domain = OLD.domain
      AND NOT EXISTS (SELECT 1 FROM recipient
                      WHERE message_id = OLD.message_id AND domain = OLD.domain
                        AND state = OLD.state);
    UPDATE domain_usage SET
        queued_messages = queued_messages + (NEW.state = 0),
        held_messages = held_messages + (NEW.state = 1)
    WHERE domain = NEW.domain
      AND NOT EXISTS (SELECT 1 FROM recipient
                      WHERE message_id = NEW.message_id AND domain = NEW.domain
                        AND state = NEW.state AND id <> NEW.id);
END;

-- How many of each domain's messages arrived in each 5-minute slot
-- (arrival / 300), so that summary's age buckets (qshape's, 5 minutes to
-- 1280 minutes, multiples of 300 s) are sums over at most 257 rows per
-- domain instead of a count of its messages. Only the slot that a bucket's
-- limit cuts in two is counted message by message (store_control.c). A
-- row goes when it drops to zero.
CREATE TABLE domain_age (
    domain   TEXT    NOT NULL,
    slot     INTEGER NOT NULL,
    messages INTEGER NOT NULL,
    PRIMARY KEY (domain, slot)
) WITHOUT ROWID;
INSERT INTO domain_age (domain, slot, messages)
SELECT r.domain, m.arrival / 300, count(DISTINCT r.message_id)
FROM recipient AS r JOIN message AS m ON m.id = r.message_id
GROUP BY r.domain, m.arrival / 300;

-- A message counts in its domain's slot with its first recipient there, as
-- in 004's domain_usage.messages.
CREATE TRIGGER domain_age_insert AFTER INSERT ON recipient
WHEN NOT EXISTS (SELECT 1 FROM recipient
                 WHERE message_id = NEW.message_id AND domain = NEW.domain AND id <> NEW.id)
BEGIN
    INSERT INTO domain_age (domain, slot, messages)
    SELECT NEW.domain, arrival / 300, 1 FROM message WHERE id = NEW.message_id
    ON CONFLICT (domain, slot) DO UPDATE SET messages = messages + 1;
END;

-- ... and stops counting with its last one. A message deleted whole still
-- has its arrival here: 004 deletes its recipients before the message.
CREATE TRIGGER domain_age_delete AFTER DELETE ON recipient
WHEN NOT EXISTS (SELECT 1 FROM recipient
                 WHERE message_id = OLD.message_id AND domain = OLD.domain)
BEGIN
    UPDATE domain_age SET messages = messages - 1
    WHERE domain = OLD.domain
      AND slot = (SELECT arrival / 300 FROM message WHERE id = OLD.message_id);
    DELETE FROM domain_age
    WHERE domain = OLD.domain
      AND slot = (SELECT arrival / 300 FROM message WHERE id = OLD.message_id)
      AND messages <= 0;
END;

-- The whole queue: messages and their bytes (`etrnctl stats`, `check`),
-- one row, so that no one counts the message table.
CREATE TABLE queue_totals (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    messages INTEGER NOT NULL,
    bytes    INTEGER NOT NULL
);
INSERT INTO queue_totals (id, messages, bytes)
SELECT 1, count(*), coalesce(sum(size), 0) FROM message;

CREATE TRIGGER queue_totals_insert AFTER INSERT ON message
BEGIN
    UPDATE queue_totals SET messages = messages + 1, bytes = bytes + NEW.size WHERE id = 1;
END;

CREATE TRIGGER queue_totals_delete AFTER DELETE ON message
BEGIN
    UPDATE queue_totals SET messages = messages - 1, bytes = bytes - OLD.size WHERE id = 1;
END;
