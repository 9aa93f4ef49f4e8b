//! The REST routes' validation and error shapes, in process with
//! `tower::ServiceExt::oneshot`: no HTTP server, no socket. Tokens are
//! checked against the real Redis (revocations), but MongoDB is a closed
//! loopback port, so a request that got past validation answers 503, and
//! these tests would see it.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use parley_common::config::Env;
use serde_json::Value;
use support::Stack;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The chat router over a MongoDB that does not answer, and a user's token.
async fn router() -> anyhow::Result<(axum::Router, String, Stack)> {
    let closed = parley_testkit::free_port()?;
    let stack = Stack::new().await?.with(
        "PARLEY_MONGODB_URI",
        format!("mongodb://127.0.0.1:{closed}/?serverSelectionTimeoutMS=500"),
    );
    let token = stack.signer.sign(
        &mongodb::bson::oid::ObjectId::new().to_hex(),
        "alice@example.com",
        "alice",
        chrono::Utc::now().timestamp(),
    )?;
    let config = parley_chat::config::Config::from_env(&Env::from_pairs(stack.env()))?;
    let app = parley_chat::app(config, CancellationToken::new()).await?;
    Ok((app.router, token, stack))
}

/// Sends `body` to `path` with `content_type` and, when given, `token`;
/// returns the status and the JSON body (`null` when not JSON).
async fn send(
    router: &axum::Router,
    (method, path): (&str, &str),
    token: Option<&str>,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> anyhow::Result<(StatusCode, Value)> {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(ct) = content_type {
        request = request.header(header::CONTENT_TYPE, ct);
    }
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = router.clone().oneshot(request.body(body.into())?).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

fn message(body: &Value) -> &str {
    body["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn refusals_before_any_store_are_json_naming_the_problem() -> anyhow::Result<()> {
    let (router, token, _stack) = router().await?;
    let json = Some("application/json");
    let auth = Some(token.as_str());
    for (route, token, content_type, body, status, says) in [
        (
            ("POST", "/api/v1/chat/new"),
            None,
            json,
            "{}",
            401,
            "Authorization",
        ),
        (
            ("GET", "/api/v1/chat/all"),
            Some("x.y.z"),
            None,
            "",
            401,
            "token",
        ),
        (
            ("POST", "/api/v1/chat/new"),
            auth,
            json,
            "{}",
            400,
            "otherUserId",
        ),
        (
            ("POST", "/api/v1/chat/new"),
            auth,
            json,
            "[]",
            400,
            "object",
        ),
        (
            ("POST", "/api/v1/chat/new"),
            auth,
            json,
            r#"{"otherUserId": 5}"#,
            400,
            "otherUserId",
        ),
        (
            ("POST", "/api/v1/chat/new"),
            auth,
            json,
            r#"{"otherUserId": "xyz"}"#,
            400,
            "otherUserId is not a valid id",
        ),
        (
            ("POST", "/api/v1/chat/new"),
            auth,
            json,
            "{not json",
            400,
            "",
        ),
        (
            ("POST", "/api/v1/chat/new"),
            auth,
            Some("text/plain"),
            "x",
            415,
            "",
        ),
        (
            ("GET", "/api/v1/message/not-an-id"),
            auth,
            None,
            "",
            400,
            "not a valid id",
        ),
        (
            ("POST", "/api/v1/block/xyz"),
            auth,
            None,
            "",
            400,
            "not a valid id",
        ),
        (
            ("GET", "/api/v1/nowhere"),
            auth,
            None,
            "",
            404,
            "no such route",
        ),
    ] {
        let (got, answer) = send(&router, route, token, content_type, body).await?;
        assert_eq!(got.as_u16(), status, "{route:?} {body}: {answer}");
        assert!(
            !message(&answer).is_empty() && message(&answer).contains(says),
            "{route:?} {body}: {answer}"
        );
    }
    let big = format!(r#"{{"otherUserId": "{}"}}"#, "a".repeat(32 * 1024));
    let (got, answer) = send(&router, ("POST", "/api/v1/chat/new"), auth, json, big).await?;
    assert_eq!(got, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert!(!message(&answer).is_empty(), "{answer}");
    Ok(())
}

#[tokio::test]
async fn a_valid_request_meets_the_missing_store_with_a_503() -> anyhow::Result<()> {
    // The counter-check of the test above: past validation, the closed
    // MongoDB port answers, as a 503.
    let (router, token, _stack) = router().await?;
    let other = mongodb::bson::oid::ObjectId::new().to_hex();
    let (got, answer) = send(
        &router,
        ("POST", "/api/v1/chat/new"),
        Some(&token),
        Some("application/json"),
        format!(r#"{{"otherUserId": "{other}"}}"#),
    )
    .await?;
    assert_eq!(got, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert!(message(&answer).contains("unavailable"), "{answer}");
    Ok(())
}
