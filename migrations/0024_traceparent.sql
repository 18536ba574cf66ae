-- Traces (docs/operations.md, "Traces"): the W3C trace context (`traceparent`,
-- `00-<trace id>-<span id>-<flags>`) of the API call that created a request, so that the steps
-- workers run for it later and the deliveries of its webhook events join that call's trace, in
-- whichever process they run. Random ids of the trace, no personal data; null when traces were
-- off. Each webhook event of a request carries its request's, copied when the event is queued.
alter table erasure_requests add column traceparent text;
alter table webhook_events add column traceparent text;
