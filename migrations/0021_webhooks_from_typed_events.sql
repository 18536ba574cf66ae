-- Webhook events are queued by the service itself, from the typed events of `domain::events`,
-- in the statement that appends their audit entries (`store::audit::append_all`): the payloads
-- and the OpenAPI document's `webhooks` are made from the same Rust types. The trigger that
-- built them from JSON keys written in Rust goes.
drop trigger audit_entries_webhooks on audit_entries;
drop function webhook_fan_out();
drop function webhook_time(timestamptz);
