-- While CertCentral is unreachable the run pauses; since when is kept here (cleared when it
-- answers again), so `status` shows it, for a run paused now or stopped by the outage.
ALTER TABLE runs ADD COLUMN unreachable_since TEXT;
