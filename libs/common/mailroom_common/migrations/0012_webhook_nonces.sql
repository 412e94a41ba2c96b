-- Provider webhooks (the bounce processor): the one-time values a signed call carries
-- (Mailgun's token), kept while a call with them could still be accepted, so a replayed
-- call is refused. Rows older than the acceptance window are deleted by the processor.
CREATE TABLE webhook_nonces (
    provider text NOT NULL,
    nonce    text NOT NULL,
    seen_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, nonce)
);
CREATE INDEX webhook_nonces_seen ON webhook_nonces (seen_at);
