-- A request's later steps are now stored when the step before them succeeds (intake writes one
-- step row instead of three or four); reads show the steps not yet reached from the scope's plan.
-- Requests accepted before this release keep their `waiting` rows, which the engine takes as
-- before.
--
-- A worker of an older release still running during the upgrade finds no `waiting` row after a
-- new request's first step and would complete the request there, with no outcome: this
-- constraint refuses that (its transaction rolls back, the step's lease expires and a new worker
-- runs it). Every completion of every release sets the outcome. `not valid`: checked for every
-- write from now on, without scanning the rows written before.
alter table erasure_requests add constraint erasure_requests_completed_with_outcome
    check (state <> 'completed' or outcome is not null) not valid;
