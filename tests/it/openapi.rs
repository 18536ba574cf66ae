//! The committed OpenAPI document is the one the code serves.

#[test]
fn committed_openapi_matches_the_code() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .expect("openapi/openapi.json is committed");
    let generated = erasure::api::openapi_json();
    assert!(
        committed == generated,
        "openapi/openapi.json differs from what the code generates; regenerate it with\n\
         \n    cargo run -q -- openapi > openapi/openapi.json\n"
    );
}

#[test]
fn every_v1_route_is_documented_and_needs_a_key() {
    let doc: serde_json::Value = serde_json::from_str(&erasure::api::openapi_json()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/v1/erasure-requests",
        "/v1/erasure-requests/batch",
        "/v1/erasure-requests/{id}",
        "/v1/erasure-requests/{id}/{action}",
    ] {
        let item = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} is not documented"));
        for (_, op) in item.as_object().unwrap() {
            assert!(
                op["security"].is_array(),
                "{path} must declare its bearer security"
            );
        }
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

/// The webhook payloads are in the document (OpenAPI 3.1 `webhooks`), made from the types the
/// outbox is written from: a renamed field changes the committed document.
#[test]
fn every_webhook_type_is_documented_with_its_payload() {
    let doc: serde_json::Value = serde_json::from_str(&erasure::api::openapi_json()).unwrap();
    let hooks = doc["webhooks"].as_object().expect("a webhooks section");
    let types: Vec<&str> = erasure::webhooks::event_types().collect();
    assert_eq!(hooks.len(), types.len());
    for kind in types {
        let body = &hooks[kind]["post"]["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(body["properties"]["type"]["enum"][0], kind, "{kind}");
        let data = body["properties"]["data"]["$ref"].as_str().unwrap();
        let name = data.rsplit('/').next().unwrap();
        assert!(
            doc["components"]["schemas"][name]["properties"].is_object(),
            "{kind}: {data} is described"
        );
    }
    let request = &doc["components"]["schemas"]["RequestEventData"]["properties"];
    for field in [
        "request_id",
        "external_reference",
        "state",
        "due_at",
        "receipt_url",
        "days_left",
        "legal_basis",
        "re_erasure_request_id",
    ] {
        assert!(request[field].is_object(), "RequestEventData.{field}");
    }
    assert!(request.get("target_id").is_none() && request.get("subject_ref").is_none());
}
