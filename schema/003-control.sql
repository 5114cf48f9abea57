-- 003-control: what the operator's commands need (issue 4, etrnctl over the
-- control socket). Applied once by relayd/store.c after 002, in its own
-- transaction. Never edit a file that has shipped: add the next number.

-- recipient.state 1 is "held" (etrnctl hold): delivery fetches state 0 only,
-- so held mail stays until it is released. `etrnctl queue --held` finds the
-- held rows through this partial index alone; queued rows (state 0, nearly
-- all of them) never enter it, so intake and delivery pay nothing for it.
CREATE INDEX recipient_held ON recipient (message_id) WHERE state = 1;
