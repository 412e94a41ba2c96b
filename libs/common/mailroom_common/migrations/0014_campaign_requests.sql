-- campaign.create by command (issue 14): the request a campaign was created by, so that the
-- same request again answers with the same campaign instead of making a second one.
-- idempotency_key: the CRM's key (one campaign per key); request_message_id: the broker
-- message id of a create without a key (a redelivery after a crash between the commit and
-- the ack finds its campaign); request_digest: SHA-256 of the request's content, to tell a
-- repeat (same content) from a key reused for another campaign (refused).
-- Unique indexes, not a look-up before the insert: two consumers taking the same request at
-- once make one campaign (INSERT ... ON CONFLICT DO NOTHING waits for the other's commit).
ALTER TABLE campaigns
    ADD COLUMN idempotency_key text,
    ADD COLUMN request_message_id text,
    ADD COLUMN request_digest bytea,
    ADD CONSTRAINT campaigns_request_digest CHECK (
        (idempotency_key IS NULL AND request_message_id IS NULL) OR request_digest IS NOT NULL
    );
CREATE UNIQUE INDEX campaigns_idempotency_key ON campaigns (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX campaigns_request_message_id ON campaigns (request_message_id)
    WHERE request_message_id IS NOT NULL;
