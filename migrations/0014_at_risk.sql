-- When an open request became *at risk* (its due date within ERASURE_AT_RISK_DAYS): set once, by
-- the workers' periodic sweep (`store::requests::mark_at_risk`), in the same transaction as the
-- `at_risk` audit entry, so that the entry is written once however many processes sweep. An
-- extension that moves the due date beyond the window clears it (`store::requests::act`), so that
-- the request can become at risk, and be audited, again. Null while it never was.
--
-- A nullable column without a default: only the catalog changes (no rewrite, no scan).
alter table erasure_requests add column at_risk_at timestamptz;
