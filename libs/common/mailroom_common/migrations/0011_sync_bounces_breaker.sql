-- Bounces heard at send time: an SMTP 5xx at RCPT or DATA naming the recipient's address is a
-- hard bounce like a DSN's, recorded by the sender with no bounce message behind it.
ALTER TABLE bounces
    ALTER COLUMN digest DROP NOT NULL,
    ADD COLUMN source text NOT NULL DEFAULT 'mailbox',
    ADD CONSTRAINT bounces_source_check CHECK (source IN ('mailbox', 'smtp')),
    ADD CONSTRAINT bounces_mailbox_digest CHECK (source <> 'mailbox' OR digest IS NOT NULL);

-- The circuit breaker. Running counts per campaign (kept as results and bounces are recorded,
-- so the completion sweep reads one row per running campaign, never its items), the counts
-- at the last resume (the rates are judged on what happened since), the reason of a pause,
-- and since when the SMTP account has refused every send of the campaign.
ALTER TABLE campaigns
    ADD COLUMN pause_reason text,
    ADD COLUMN delivery_attempts bigint NOT NULL DEFAULT 0,
    ADD COLUMN hard_bounces bigint NOT NULL DEFAULT 0,
    ADD COLUMN complaints bigint NOT NULL DEFAULT 0,
    ADD COLUMN resumed_attempts bigint NOT NULL DEFAULT 0,
    ADD COLUMN resumed_hard_bounces bigint NOT NULL DEFAULT 0,
    ADD COLUMN resumed_complaints bigint NOT NULL DEFAULT 0,
    ADD COLUMN account_failing_since timestamptz;

-- Every proven bounce of a campaign item counts, whoever records it (the sender, the bounce
-- mailbox): hard failures and complaints, not soft bounces nor delay warnings. One update per
-- campaign and statement.
CREATE FUNCTION bounces_count_for_campaigns() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE campaigns c
    SET hard_bounces = c.hard_bounces + n.hard, complaints = c.complaints + n.complaints
    FROM (SELECT campaign_id,
                 count(*) FILTER (WHERE kind = 'hard' AND action IS DISTINCT FROM 'delayed') AS hard,
                 count(*) FILTER (WHERE kind = 'complaint') AS complaints
          FROM added
          WHERE campaign_id IS NOT NULL AND item_id IS NOT NULL
          GROUP BY campaign_id) n
    WHERE c.id = n.campaign_id AND (n.hard > 0 OR n.complaints > 0);
    RETURN NULL;
END
$$;

CREATE TRIGGER bounces_campaign_counts AFTER INSERT ON bounces
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION bounces_count_for_campaigns();
