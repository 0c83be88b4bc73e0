-- Sessions by the time they were revoked or expired, for the two readers of dead sessions: each
-- process reads the sessions revoked in the last minutes whenever its revocation feed
-- (re)subscribes (seatlock/accounts/sessions.py), and the pruning loop deletes those dead for a
-- day (seatlock/services/retention.py), both without reading every session.
CREATE INDEX auth_sessions_revoked_idx ON auth_sessions (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX auth_sessions_expires_idx ON auth_sessions (expires_at);
