-- The campaign status state machine (mailroom_common.campaign_lifecycle makes every change):
-- anything else is a bug, refused loudly, as item transitions already are. A paused campaign
-- goes back only to the status it was paused from.
CREATE FUNCTION campaign_transition_allowed(old_status text, new_status text, paused_from text)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT old_status = new_status
        OR (old_status = 'paused' AND new_status IS NOT DISTINCT FROM paused_from)
        OR (old_status, new_status) IN (
            ('draft', 'scheduled'), ('draft', 'generating'), ('draft', 'cancelled'),
            ('scheduled', 'generating'), ('scheduled', 'paused'), ('scheduled', 'cancelled'),
            ('generating', 'sending'), ('generating', 'paused'), ('generating', 'cancelled'),
            ('generating', 'failed'),
            ('sending', 'completed'), ('sending', 'paused'), ('sending', 'cancelled'),
            ('sending', 'failed'),
            ('paused', 'cancelled')
        )
$$;

CREATE FUNCTION campaign_status_check_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT campaign_transition_allowed(OLD.status, NEW.status, OLD.paused_from) THEN
        RAISE EXCEPTION 'campaign %: status % -> % is not allowed', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER campaigns_transition BEFORE UPDATE OF status ON campaigns
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION campaign_status_check_transition();

-- Parking: the items of a paused campaign that reach the sender go back to pending, their
-- page unpublished; the republish sweep hands the page over again once the campaign resumes.
CREATE OR REPLACE FUNCTION campaign_item_transition_allowed(old_status text, new_status text)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT old_status = new_status OR (old_status, new_status) IN (
        ('pending', 'queued'), ('pending', 'sending'), ('pending', 'suppressed'), ('pending', 'skipped'), ('pending', 'failed'),
        ('queued', 'sending'), ('queued', 'suppressed'), ('queued', 'skipped'), ('queued', 'failed'),
        ('queued', 'pending'),
        ('sending', 'sent'), ('sending', 'retry'), ('sending', 'failed'), ('sending', 'suppressed'),
        ('sending', 'skipped'),
        ('retry', 'sending'), ('retry', 'failed'), ('retry', 'suppressed'), ('retry', 'skipped'),
        ('retry', 'pending'),
        ('sent', 'bounced'), ('failed', 'bounced')
    )
$$;

-- The page holding an item: the campaign's page with the greatest first id at or below it.
CREATE INDEX item_pages_campaign_first_item ON item_pages (campaign_id, first_item_id);
