-- Archived items: the items of finished campaigns, moved out of campaign_items (by
-- `mailroom campaign archive ID` or the completion service's retention) so that yesterday's
-- campaigns never weigh on today's. A row keeps what a late bounce still needs: the item's id
-- (VERP addresses and Message-IDs name it), its address, its campaign and its status.
CREATE TABLE archived_items (
    id          bigint PRIMARY KEY,
    campaign_id bigint NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    contact_id  bigint NOT NULL,
    email       text NOT NULL,
    status      text NOT NULL
                CHECK (status IN ('pending', 'queued', 'sending', 'sent', 'retry', 'failed',
                                  'suppressed', 'skipped', 'bounced')),
    bounce_kind text CHECK (bounce_kind IN ('hard', 'soft')),
    smtp_code   integer,
    sent_at     timestamptz
);
CREATE INDEX archived_items_campaign ON archived_items (campaign_id);

-- The items moved to archived_items, by status ({"sent": 990000, "bounced": 12, ...}), kept up
-- to date by each archived chunk and by late bounces; a campaign's counts are these plus its
-- items still in campaign_items. archived_at: every item has been moved.
ALTER TABLE campaigns
    ADD COLUMN archived_counts jsonb,
    ADD COLUMN archived_at timestamptz;

-- A bounce keeps naming its item after the item moves to archived_items (same id).
ALTER TABLE bounces DROP CONSTRAINT bounces_item_id_fkey;
