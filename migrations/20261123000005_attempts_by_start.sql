-- A new process seeds its rate limiter from the requests of the last window.
CREATE INDEX attempts_by_start ON attempts (started_at);
