//! The routes' validation and error shapes, in process with
//! `tower::ServiceExt::oneshot`: no server, no socket. Every store the
//! service is given is a closed loopback port, so any request that got
//! past validation would answer 503, and these tests would see it.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use parley_common::config::Env;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The user service's router over unreachable stores.
async fn router() -> anyhow::Result<(axum::Router, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let (private, _) = parley_common::token::generate_ed25519_pem()?;
    let key = dir.path().join("private.pem");
    std::fs::write(&key, private)?;
    let closed = parley_testkit::free_port()?;
    let env = Env::from_pairs([
        (
            "PARLEY_MONGODB_URI",
            format!("mongodb://127.0.0.1:{closed}/"),
        ),
        ("PARLEY_REDIS_URL", format!("redis://127.0.0.1:{closed}")),
        ("PARLEY_AMQP_URL", format!("amqp://127.0.0.1:{closed}/%2f")),
        (
            "PARLEY_JWT_PRIVATE_KEY_FILE",
            key.to_string_lossy().into_owned(),
        ),
        (
            "PARLEY_OTP_SECRET",
            "0123456789abcdef0123456789abcdef".to_owned(),
        ),
        ("PARLEY_MAX_BODY_BYTES", "1024".to_owned()),
    ]);
    let config = parley_user::config::Config::from_env(&env)?;
    let (router, _amqp) = parley_user::app(config, CancellationToken::new()).await?;
    Ok((router, dir))
}

/// Sends `body` (raw) with `content_type` to `path`; returns status and JSON body.
async fn send(
    router: &axum::Router,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> anyhow::Result<(StatusCode, Value)> {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(ct) = content_type {
        request = request.header(header::CONTENT_TYPE, ct);
    }
    let mut request = request.body(body.into())?;
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    let response = router.clone().oneshot(request).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

async fn post_json(
    router: &axum::Router,
    path: &str,
    body: &str,
) -> anyhow::Result<(StatusCode, Value)> {
    send(
        router,
        "POST",
        path,
        Some("application/json"),
        body.to_owned(),
    )
    .await
}

fn message(body: &Value) -> &str {
    body["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn malformed_bodies_get_a_400_naming_the_problem() -> anyhow::Result<()> {
    let (router, _dir) = router().await?;
    for (path, body, says) in [
        ("/api/v1/login", "[]", "expected a JSON object"),
        ("/api/v1/login", "{}", "email is required"),
        ("/api/v1/login", r#"{"email": 5}"#, "email must be a string"),
        ("/api/v1/login", r#"{"email": "not-an-address"}"#, "email"),
        ("/api/v1/login", "{not json", ""),
        (
            "/api/v1/verify",
            r#"{"email": "a@example.com"}"#,
            "otp is required",
        ),
        (
            "/api/v1/verify",
            r#"{"email": "a@example.com", "otp": "123456", "loginId": 7}"#,
            "loginId must be a string",
        ),
        (
            "/api/v1/verify",
            r#"{"email": "a@example.com", "otp": "12"}"#,
            "otp must be",
        ),
    ] {
        let (status, answer) = post_json(&router, path, body).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}: {answer}");
        assert!(
            !message(&answer).is_empty() && message(&answer).contains(says),
            "{path} {body}: {answer}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn transport_refusals_are_json_too() -> anyhow::Result<()> {
    let (router, _dir) = router().await?;
    let (status, answer) = send(&router, "POST", "/api/v1/login", Some("text/plain"), "x").await?;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{answer}");
    assert!(!message(&answer).is_empty(), "{answer}");
    let big = format!(r#"{{"email": "{}@example.com"}}"#, "a".repeat(4096));
    let (status, answer) = post_json(&router, "/api/v1/login", &big).await?;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    let (status, answer) = send(&router, "GET", "/api/v1/me", None, Body::empty()).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert!(!message(&answer).is_empty(), "{answer}");
    let (status, answer) = send(&router, "GET", "/api/v1/nowhere", None, Body::empty()).await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert_eq!(message(&answer), "no such route");
    Ok(())
}

#[tokio::test]
async fn a_valid_login_meets_the_missing_stores_with_a_503() -> anyhow::Result<()> {
    // the counter-check of the tests above: past validation, the closed
    // ports answer, as a 503 with Retry-After
    let (router, _dir) = router().await?;
    let (status, answer) =
        post_json(&router, "/api/v1/login", r#"{"email": "a@example.com"}"#).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert!(message(&answer).contains("unavailable"), "{answer}");
    Ok(())
}
