//! Where a schema-driven fuzzer found the spec and the server disagreeing: a `/helo` body
//! without `name`, `TRACE /`, names the schema allowed and the rule refused, and the YAML
//! document described as a string.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

#[tokio::test]
async fn a_helo_body_without_name_is_refused_as_the_schema_says() {
    let spec: Value = serde_norway::from_str(include_str!("../../openapi.yaml")).unwrap();
    let required = &spec["components"]["schemas"]["HeloRequest"]["required"];
    assert_eq!(required, &serde_json::json!(["name"]), "{required}");
    let app = spawn_app(test_config()).await;

    let response = app.post_raw("/helo", None, "{}").await;

    assert_error(response, StatusCode::BAD_REQUEST, "invalid_body").await;
}

#[tokio::test]
async fn other_methods_on_the_page_are_405_with_allow_like_any_route() {
    let app = spawn_app(test_config()).await;

    for method in ["TRACE", "POST", "DELETE", "PUT"] {
        let response = send(app.client.request(method.parse().unwrap(), app.url("/"))).await;
        assert_eq!(
            response
                .headers()
                .get("allow")
                .and_then(|v| v.to_str().ok()),
            Some("GET, HEAD"),
            "{method} /"
        );
        assert_error(
            response,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        )
        .await;
    }
    // Elsewhere the page's files are still simply not found for other methods.
    let response = send(app.client.post(app.url("/nope"))).await;
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
}

/// The `Name` schema of `openapi.yaml`, validated as OpenAPI 3.1 does (JSON Schema 2020-12).
fn name_schema() -> jsonschema::Validator {
    let spec: Value = serde_norway::from_str(include_str!("../../openapi.yaml")).unwrap();
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&spec["components"]["schemas"]["Name"])
        .expect("Name is a valid schema")
}

#[tokio::test]
async fn the_name_schema_accepts_exactly_the_names_the_server_accepts() {
    let schema = name_schema();
    let app = spawn_app(Config {
        helo_rate: 0,
        ..test_config()
    })
    .await;

    // Every character the schema refuses inside a name, and those just around each run of
    // them, are asked of the server; so are a spread of the rest and the trimming cases.
    let refused: Vec<u32> = (0..=0x10FFFF_u32)
        .filter(|&u| char::from_u32(u).is_some_and(|c| !schema.is_valid(&json!(format!("a{c}b")))))
        .collect();
    assert!(
        refused.len() > 200,
        "controls and format characters: {}",
        refused.len()
    );
    let mut probes: BTreeSet<u32> = refused.iter().copied().collect();
    probes.extend(refused.iter().flat_map(|&u| [u.saturating_sub(1), u + 1]));
    probes.extend((0..=0x10FFFF).step_by(4099));
    let mut names: Vec<String> = probes
        .into_iter()
        .filter_map(char::from_u32)
        .map(|c| format!("a{c}b"))
        .collect();
    let long = "x".repeat(64);
    names.extend(
        [
            " a ",
            " ",
            "",
            "\u{3000}a\u{2028}",
            "a\n",
            "\ta",
            "a \u{202e}b",
        ]
        .map(String::from)
        .into_iter()
        .chain([long.clone(), format!(" {long} "), format!("{long}y")]),
    );

    let mut disagreements = Vec::new();
    for name in names {
        let expected = schema.is_valid(&json!(name));
        let status = app.helo_response(&name).await.status();
        if (status == StatusCode::CREATED) != expected {
            disagreements.push(format!("{name:?}: schema {expected}, server {status}"));
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
}

#[tokio::test]
async fn the_served_document_is_what_its_own_response_schema_says() {
    let spec: Value = serde_norway::from_str(include_str!("../../openapi.yaml")).unwrap();
    let schema = &spec["paths"]["/openapi.yaml"]["get"]["responses"]["200"]["content"]["application/yaml"]
        ["schema"];
    let app = spawn_app(test_config()).await;

    let response = send(app.client.get(app.url("/openapi.yaml"))).await;

    assert_eq!(response.status(), StatusCode::OK);
    let served: Value = serde_norway::from_str(&response.text().await.unwrap()).unwrap();
    let validator = jsonschema::validator_for(schema).unwrap();
    assert!(validator.is_valid(&served), "{schema}");
    assert_eq!(served, spec);
}

#[tokio::test]
async fn a_resume_point_beyond_the_documented_maximum_is_refused_before_the_session_is_sought() {
    let spec: Value = serde_norway::from_str(include_str!("../../openapi.yaml")).unwrap();
    for parameter in spec["paths"]["/events/{id}"]["get"]["parameters"]
        .as_array()
        .unwrap()
    {
        if ["last_event_id", "Last-Event-ID"].contains(&parameter["name"].as_str().unwrap()) {
            assert_eq!(
                parameter["schema"]["maximum"],
                json!(u64::MAX),
                "{parameter}"
            );
        }
    }
    let app = spawn_app(test_config()).await;
    let session = app.helo("ada").await;
    let unknown = uuid::Uuid::new_v4();
    let stream = |id: &str, last: String| {
        app.client
            .get(app.url(&format!("/events/{id}")))
            .bearer_auth(&session.token)
            .header("Last-Event-ID", last)
    };

    // One past the maximum is not an event id at all, whichever session it names.
    for id in [session.id.as_str(), &unknown.to_string()] {
        let response = send(stream(id, format!("{}0", u64::MAX / 10 + 1))).await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_last_event_id").await;
    }
    // The maximum itself is an id: the unknown session is what is wrong with it.
    let response = send(stream(&unknown.to_string(), u64::MAX.to_string())).await;
    assert_error(response, StatusCode::NOT_FOUND, "unknown_session").await;
}
