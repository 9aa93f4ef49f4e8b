//! Passwordless login and profiles against real Redis, RabbitMQ and the
//! MongoDB-protocol server, through the real binary.

mod support;

use std::time::Duration;

use parley_common::token::{Claims, TokenSigner, TokenVerifier, generate_ed25519_pem};
use parley_testkit::{RabbitServer, wait_until};
use reqwest::Method;
use serde_json::json;
use support::{Stack, T, call, login, wrong};

#[tokio::test]
async fn the_whole_flow_login_verify_profile() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let mut mailbox = stack.mailbox().await?;
    let service = stack.service().await?;

    let (user, token) = login(&service, &mut mailbox, "  Ann.Smith@Example.com ").await?;
    assert_eq!(user["email"], "ann.smith@example.com");
    assert_eq!(
        user["name"], "ann.smit",
        "name from the email, as the original did"
    );

    // The token verifies with the published key set.
    let jwks: jsonwebtoken::jwk::JwkSet = service
        .http()
        .get(service.url("/.well-known/jwks.json"))
        .send()
        .await?
        .json()
        .await?;
    let claims = TokenVerifier::new().with_jwks(&jwks)?.verify(&token)?;
    assert_eq!(claims.sub, user["_id"].as_str().unwrap_or_default());
    assert_eq!(claims.email, "ann.smith@example.com");

    let (status, me) = call(&service, Method::GET, "/api/v1/me", Some(&token), None).await?;
    assert_eq!((status, &me["_id"]), (200, &user["_id"]));

    // A second login finds the same user.
    let (again, _) = login(&service, &mut mailbox, "ann.smith@example.com").await?;
    assert_eq!(again["_id"], user["_id"]);

    // Profiles: by id (authenticated), rename with a fresh token and an event.
    let id = user["_id"].as_str().unwrap_or_default().to_owned();
    let (status, _) = call(
        &service,
        Method::GET,
        &format!("/api/v1/user/{id}"),
        None,
        None,
    )
    .await?;
    assert_eq!(status, 401, "reading users needs a token now");
    let (status, one) = call(
        &service,
        Method::GET,
        &format!("/api/v1/user/{id}"),
        Some(&token),
        None,
    )
    .await?;
    assert_eq!((status, &one["name"]), (200, &json!("ann.smit")));
    let (status, _) = call(
        &service,
        Method::GET,
        "/api/v1/user/xyz",
        Some(&token),
        None,
    )
    .await?;
    assert_eq!(status, 400);
    let (status, _) = call(
        &service,
        Method::GET,
        "/api/v1/user/0123456789abcdef01234567",
        Some(&token),
        None,
    )
    .await?;
    assert_eq!(status, 404);

    let (status, updated) = call(
        &service,
        Method::POST,
        "/api/v1/update/user",
        Some(&token),
        Some(json!({"name": "  Ann  "})),
    )
    .await?;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["user"]["name"], "Ann");
    let fresh = updated["token"].as_str().unwrap_or_default();
    assert_eq!(
        TokenVerifier::new().with_jwks(&jwks)?.verify(fresh)?.name,
        "Ann"
    );
    let event = loop {
        let e = mailbox.next().await?;
        if e["type"] == "user.updated.v1" {
            break e;
        }
    };
    assert_eq!(
        event["data"],
        json!({"userId": id, "name": "Ann", "email": "ann.smith@example.com"})
    );
    for bad in [
        json!({"name": "   "}),
        json!({"name": "x".repeat(65)}),
        json!({"name": 5}),
        json!({}),
        // Names that display as something else: bidi overrides and
        // isolates, and zero-width characters.
        json!({"name": "Ann\u{202E}gpj.exe"}),
        json!({"name": "\u{2067}Support\u{2069}"}),
        json!({"name": "Ann\u{200F}"}),
        json!({"name": "A\u{200B}nn"}),
        json!({"name": "A\u{200D}nn"}),
        json!({"name": "\u{FEFF}Ann"}),
        json!({"name": "A\u{2060}nn"}),
    ] {
        let (status, body) = call(
            &service,
            Method::POST,
            "/api/v1/update/user",
            Some(&token),
            Some(bad.clone()),
        )
        .await?;
        assert_eq!(status, 400, "{bad}: {body}");
    }

    // Batch lookup for the chat service.
    let (status, found) = call(
        &service,
        Method::POST,
        "/api/v1/users/lookup",
        Some(&token),
        Some(json!({"ids": [id, "0123456789abcdef01234567"]})),
    )
    .await?;
    assert_eq!(status, 200);
    assert_eq!(found["users"].as_array().map(Vec::len), Some(1));
    let too_many: Vec<String> = (0..101)
        .map(|_| "0123456789abcdef01234567".to_owned())
        .collect();
    let (status, _) = call(
        &service,
        Method::POST,
        "/api/v1/users/lookup",
        Some(&token),
        Some(json!({"ids": too_many})),
    )
    .await?;
    assert_eq!(status, 400);
    Ok(())
}

#[tokio::test]
async fn user_list_is_paginated() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let mut mailbox = stack.mailbox().await?;
    let service = stack.service().await?;
    let mut token = String::new();
    for i in 0..5 {
        token = login(&service, &mut mailbox, &format!("p{i}@example.com"))
            .await?
            .1;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/user/all?limit=2&cursor={c}"),
            None => "/api/v1/user/all?limit=2".to_owned(),
        };
        let response = service
            .http()
            .get(service.url(&path))
            .bearer_auth(&token)
            .send()
            .await?;
        assert_eq!(response.status(), 200);
        cursor = response
            .headers()
            .get("x-next-cursor")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let page: Vec<serde_json::Value> = response.json().await?;
        assert!(page.len() <= 2);
        assert!(page.iter().all(|u| u.get("email").is_none()), "{page:?}");
        seen.extend(
            page.into_iter()
                .map(|u| u["name"].as_str().unwrap_or_default().to_owned()),
        );
        if cursor.is_none() {
            break;
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        (0..5).map(|i| format!("p{i}@examp")).collect::<Vec<_>>()
    );
    let (status, _) = call(
        &service,
        Method::GET,
        "/api/v1/user/all?limit=1000",
        Some(&token),
        None,
    )
    .await?;
    assert_eq!(status, 400);
    Ok(())
}

/// POSTs a login for `email`; the answer's login id.
async fn login_id_for(
    service: &parley_testkit::ServiceProcess,
    email: &str,
) -> anyhow::Result<String> {
    let (status, body) = call(
        service,
        Method::POST,
        "/api/v1/login",
        None,
        Some(json!({"email": email})),
    )
    .await?;
    anyhow::ensure!(status == 200, "login: {status} {body}");
    Ok(body["loginId"].as_str().unwrap_or_default().to_owned())
}

fn said(body: &serde_json::Value, what: &str) -> bool {
    body["message"].as_str().unwrap_or_default().contains(what)
}

#[tokio::test]
async fn brute_force_burns_the_code() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let mut mailbox = stack.mailbox().await?;
    let service = stack.service().await?;
    let verify =
        |body: serde_json::Value| call(&service, Method::POST, "/api/v1/verify", None, Some(body));

    // With the login id: 5 wrong tries burn the code.
    let email = "target@example.com";
    let id = login_id_for(&service, email).await?;
    let code = mailbox.code_for(email).await?;
    for _ in 0..5 {
        let (status, body) =
            verify(json!({"email": email, "otp": wrong(&code), "loginId": id})).await?;
        assert_eq!(status, 400, "{body}");
        assert!(said(&body, "invalid"), "{body}");
    }
    let (status, body) = verify(json!({"email": email, "otp": code, "loginId": id})).await?;
    assert_eq!(status, 400, "the right code after 5 wrong tries: {body}");
    assert!(said(&body, "no longer works"), "{body}");

    // Concurrent guesses cannot exceed the limit either.
    let email = "crowd@example.com";
    let id = login_id_for(&service, email).await?;
    let code = mailbox.code_for(email).await?;
    let guesses =
        (0..20).map(|_| verify(json!({"email": email, "otp": wrong(&code), "loginId": id})));
    let answers = futures::future::join_all(guesses).await;
    let count = |what: &str| {
        answers
            .iter()
            .filter(|a| a.as_ref().is_ok_and(|(_, b)| said(b, what)))
            .count()
    };
    assert_eq!(
        (count("invalid"), count("no longer works")),
        (5, 15),
        "exactly 5 of 20 concurrent guesses were evaluated"
    );

    // Without the login id (old clients): 3 wrong codes a day for the
    // account, which do not burn the code for its login id; single use.
    let email = "legacy@example.com";
    let id = login_id_for(&service, email).await?;
    let code = mailbox.code_for(email).await?;
    for _ in 0..3 {
        let (status, body) = verify(json!({"email": email, "otp": wrong(&code)})).await?;
        assert_eq!(status, 400, "{body}");
    }
    let (status, body) = verify(json!({"email": email, "otp": code})).await?;
    assert_eq!(status, 429, "the legacy budget is spent: {body}");
    let (status, body) = verify(json!({"email": email, "otp": code, "loginId": id})).await?;
    assert_eq!(status, 200, "{body}");
    let (status, _) = verify(json!({"email": email, "otp": code, "loginId": id})).await?;
    assert_eq!(status, 400, "single use");
    Ok(())
}

#[tokio::test]
async fn limits_cooldown_per_address_and_no_account_probing() -> anyhow::Result<()> {
    let stack = Stack::new()
        .await?
        .with("PARLEY_OTP_RESEND_SECS", "60")
        .with("PARLEY_LOGIN_PER_IP_PER_HOUR", "4");
    let mut mailbox = stack.mailbox().await?;
    let service = stack.service().await?;
    login(&service, &mut mailbox, "known@example.com").await?;
    // Same answer for a known and an unknown address.
    let (s1, b1) = call(
        &service,
        Method::POST,
        "/api/v1/login",
        None,
        Some(json!({"email": "stranger@example.com"})),
    )
    .await?;
    let known = service
        .http()
        .post(service.url("/api/v1/login"))
        .json(&json!({"email": "other@example.com"}))
        .send()
        .await?;
    assert_eq!(s1, known.status().as_u16());
    let b2 = known.json::<serde_json::Value>().await?;
    assert_eq!(b1["message"], b2["message"]);
    assert_ne!(b1["loginId"], b2["loginId"], "every login has its own id");
    // Resend cooldown, with Retry-After.
    let again = service
        .http()
        .post(service.url("/api/v1/login"))
        .json(&json!({"email": "stranger@example.com"}))
        .send()
        .await?;
    assert_eq!(again.status(), 429);
    let retry: u64 = again.headers()["retry-after"].to_str()?.parse()?;
    assert!((1..=60).contains(&retry), "{retry}");
    // Per-address limit: 4 an hour (1 login + 2 above + this one), then 429 for any email.
    call(
        &service,
        Method::POST,
        "/api/v1/login",
        None,
        Some(json!({"email": "fourth@example.com"})),
    )
    .await?;
    let (status, body) = call(
        &service,
        Method::POST,
        "/api/v1/login",
        None,
        Some(json!({"email": "fifth@example.com"})),
    )
    .await?;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("address")
    );
    Ok(())
}

#[tokio::test]
async fn broker_down_during_login_leaves_no_usable_code() -> anyhow::Result<()> {
    let mut rabbit = RabbitServer::start().await?;
    let stack = Stack::new().await?.with("PARLEY_AMQP_URL", rabbit.url());
    let service = stack.service().await?;
    rabbit.stop().await?;
    let email = "offline@example.com";
    let (status, body) = call(
        &service,
        Method::POST,
        "/api/v1/login",
        None,
        Some(json!({"email": email})),
    )
    .await?;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("rabbitmq")
    );
    let mut redis = stack.ns.redis().await?;
    let key = format!("{}otp:{email}", stack.ns.redis_prefix);
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut redis)
        .await?;
    assert_eq!(exists, 0, "a code nobody was sent is not stored");
    rabbit.restart().await?;
    service.wait_whole(Duration::from_secs(15)).await?;
    // No cooldown was left behind either: a new login works at once.
    let (status, body) = call(
        &service,
        Method::POST,
        "/api/v1/login",
        None,
        Some(json!({"email": email})),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    Ok(())
}

#[tokio::test]
async fn concurrent_first_logins_create_one_user() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let db = stack.ns.mongo().await?;
    let users = parley_user::store::Users::new(&db);
    users.ensure_indexes().await?;
    let attempts = (0..8).map(|_| users.find_or_create("race@example.com", "race@exa"));
    let created = futures::future::join_all(attempts).await;
    let ids: std::collections::HashSet<String> = created
        .into_iter()
        .map(|r| {
            r.map(|u| u.id.to_hex())
                .map_err(|e| anyhow::anyhow!(e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    assert_eq!(ids.len(), 1);
    let count = db
        .collection::<mongodb::bson::Document>("users")
        .count_documents(mongodb::bson::doc! {"email": "race@example.com"})
        .await?;
    assert_eq!(count, 1);
    Ok(())
}

/// Sends a POST announcing `len` bytes of JSON over a raw socket and returns
/// the status code. The server may answer before taking the whole body, so
/// write errors after the headers are expected and ignored.
async fn oversized_post(port: u16, path: &str, len: usize) -> anyhow::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await?;
    let _ = socket.write_all(&vec![b' '; len]).await;
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(T, socket.read(&mut answer)).await??;
    let line = String::from_utf8_lossy(&answer[..n]);
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status in {line:?}"))
}

#[tokio::test]
async fn bad_input_gets_4xx_never_5xx() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let mut mailbox = stack.mailbox().await?;
    let service = stack.service().await?;
    let (user, token) = login(&service, &mut mailbox, "victim@example.com").await?;
    let post_raw = |path: &str, content_type: &str, body: Vec<u8>| {
        service
            .http()
            .post(service.url(path))
            .header("content-type", content_type.to_owned())
            .body(body)
            .send()
    };
    for (body, want) in [
        (b"{not json".to_vec(), 400),
        (b"[]".to_vec(), 400),
        (br#"{"email": 5}"#.to_vec(), 400),
        (br#"{"email": null}"#.to_vec(), 400),
        (br#"{"email": "\u00e9l\u00e8ve@exemple.fr"}"#.to_vec(), 400),
        (
            format!(r#"{{"email": "{}@example.com"}}"#, "a".repeat(300)).into_bytes(),
            400,
        ),
    ] {
        let response = post_raw("/api/v1/login", "application/json", body).await?;
        assert_eq!(response.status().as_u16(), want);
        let json: serde_json::Value = response.json().await?;
        assert!(json["message"].is_string(), "{json}");
    }
    assert_eq!(
        post_raw("/api/v1/login", "text/plain", b"{}".to_vec())
            .await?
            .status(),
        415
    );
    assert_eq!(
        oversized_post(service.port(), "/api/v1/login", 1024 * 1024).await?,
        413
    );
    for body in [
        json!({"email": "victim@example.com"}),
        json!({"email": "victim@example.com", "otp": "12"}),
        json!({"email": "victim@example.com", "otp": {"$gt": ""}}),
        json!({"otp": "123456"}),
    ] {
        let (status, answer) = call(
            &service,
            Method::POST,
            "/api/v1/verify",
            None,
            Some(body.clone()),
        )
        .await?;
        assert_eq!(status, 400, "{body}: {answer}");
    }

    // Tokens: missing, malformed, expired, tampered, unknown key.
    let (private, _) = generate_ed25519_pem()?;
    let stranger = TokenSigner::from_pem(&private, Duration::from_secs(60))?;
    let sub = user["_id"].as_str().unwrap_or_default();
    let mut key_file = std::fs::read_to_string(stack.key.path())?;
    key_file.push_str("\n\n");
    let ours = TokenSigner::from_pem(&key_file, Duration::from_secs(60))?;
    let expired = ours.sign_claims(&Claims {
        iat: 1,
        exp: 2,
        ..ours.claims(sub, "victim@example.com", "v", 0, 1)
    })?;
    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
    for (header, what) in [
        (None, "missing"),
        (Some("Token abc".to_owned()), "wrong scheme"),
        (Some("Bearer".to_owned()), "empty"),
        (Some("Bearer not-a-jwt".to_owned()), "malformed"),
        (Some(format!("Bearer {expired}")), "expired"),
        (Some(format!("Bearer {tampered}")), "tampered"),
        (
            Some(format!(
                "Bearer {}",
                stranger.sign(sub, "x", "x", chrono::Utc::now().timestamp())?
            )),
            "unknown kid",
        ),
    ] {
        let mut request = service.http().get(service.url("/api/v1/me"));
        if let Some(h) = header {
            request = request.header("authorization", h);
        }
        let response = request.send().await?;
        assert_eq!(response.status(), 401, "{what}");
        let body: serde_json::Value = response.json().await?;
        assert!(body["message"].is_string(), "{what}: {body}");
    }
    let (status, _) = call(&service, Method::GET, "/api/v1/me", Some(&token), None).await?;
    assert_eq!(status, 200);
    wait_until("service still ready", T, || async {
        matches!(service.readyz().await, Some((200, _)))
    })
    .await?;
    Ok(())
}
