-- Bounces of autoresponder emails are kept against their autoresponder item.
ALTER TABLE bounces
    ADD COLUMN autoresponder_item_id bigint REFERENCES autoresponder_items (id) ON DELETE SET NULL;
CREATE INDEX bounces_autoresponder_item ON bounces (autoresponder_item_id)
    WHERE autoresponder_item_id IS NOT NULL;
