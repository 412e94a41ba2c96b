-- The adaptive send rate (mailroom_common.adaptive_rate): beside a token bucket, the rate it
-- refills at now, lowered when the relay throttles and raised back slowly (AIMD), shared by
-- every replica. NULL rate: the bucket is not adaptive (or was never lowered).
ALTER TABLE rate_limits
    ADD COLUMN rate double precision,
    ADD COLUMN ceiling double precision,      -- the rate at most (as the last taker set it)
    ADD COLUMN rate_changed_at timestamptz,   -- the last decrease, or the last step up
    ADD COLUMN decreased_at timestamptz,      -- the last decrease: at most one per interval
    ADD COLUMN waited_at timestamptz,         -- the last take that had to wait (rate in use)
    ADD COLUMN reason text,                   -- the reply that caused the last decrease
    ADD COLUMN throttle_events bigint NOT NULL DEFAULT 0;
