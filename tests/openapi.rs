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
