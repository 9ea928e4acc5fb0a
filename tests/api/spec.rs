//! Where a schema-driven fuzzer found the spec and the server disagreeing: a `/helo` body
//! without `name`, and `TRACE /`.

use reqwest::StatusCode;
use serde_json::Value;

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
