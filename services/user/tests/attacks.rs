//! Attacks on login and privacy, carried out against the real binary with
//! real Redis, RabbitMQ and the MongoDB-protocol server. Each client speaks
//! from its own loopback address (Linux routes all of 127.0.0.0/8 to lo), or
//! through a trusted proxy's `X-Forwarded-For`.

mod support;

use std::time::Duration;

use mongodb::bson::oid::ObjectId;
use mongodb::bson::{DateTime, doc};
use parley_testkit::wait_until;
use reqwest::Method;
use serde_json::{Value, json};
use support::{Stack, call, client_from, login, message, post, wrong};

const LOGIN: &str = "/api/v1/login";
const VERIFY: &str = "/api/v1/verify";

/// Item 1: refused requests from one client must not use up the budget
/// every other client shares.
#[tokio::test]
async fn attack_refused_logins_do_not_exhaust_global_budget() -> anyhow::Result<()> {
    let stack = Stack::new()
        .await?
        .with("PARLEY_LOGIN_GLOBAL_PER_MINUTE", "5")
        .with("PARLEY_LOGIN_PER_IP_PER_HOUR", "2")
        .with("PARLEY_OTP_RESEND_SECS", "60");
    let mut mailbox = stack.mailbox().await?;
    let service = stack.service().await?;

    // Refused by the per-address limit...
    let flooder = client_from("127.0.0.2")?;
    let mut issued = 0;
    for i in 0..40 {
        let email = format!("spam{i}@example.com");
        let (status, _, body) =
            post(&flooder, &service, LOGIN, &[], json!({"email": email})).await?;
        assert!(status == 200 || status == 429, "{status} {body}");
        issued += usize::from(status == 200);
    }
    assert_eq!(issued, 2, "the per-address limit holds");
    // ...and by the resend cooldown of one address.
    let repeater = client_from("127.0.0.3")?;
    let mut issued = 0;
    for _ in 0..20 {
        let (status, _, _) = post(
            &repeater,
            &service,
            LOGIN,
            &[],
            json!({"email": "same@example.com"}),
        )
        .await?;
        issued += usize::from(status == 200);
    }
    assert_eq!(issued, 1, "the cooldown holds");

    // Three codes were issued in all: someone else still gets one.
    let victim = client_from("127.0.0.4")?;
    let (status, _, body) = post(
        &victim,
        &service,
        LOGIN,
        &[],
        json!({"email": "victim@example.com"}),
    )
    .await?;
    assert_eq!(status, 200, "an unrelated login was refused: {body}");
    mailbox.code_for("victim@example.com").await?;

    // The global budget still counts what was issued: 5 a minute. Six more
    // requests (two from each of three addresses) meet it even if a new
    // minute starts meanwhile.
    let mut statuses = Vec::new();
    for i in 0..6 {
        let others = client_from(&format!("127.0.0.{}", 20 + i / 2))?;
        let (status, _, body) = post(
            &others,
            &service,
            LOGIN,
            &[],
            json!({"email": format!("o{i}@example.com")}),
        )
        .await?;
        statuses.push((status, message(&body).to_owned()));
    }
    let refused = statuses.iter().filter(|(s, _)| *s == 429).count();
    assert!(refused >= 1, "the global budget never bit: {statuses:?}");
    Ok(())
}

/// Item 2: one address sending many wrong codes is stopped.
#[tokio::test]
async fn attack_many_wrong_verifies_from_one_address_are_refused() -> anyhow::Result<()> {
    let stack = Stack::new().await?.with("PARLEY_OTP_DIGITS", "6");
    let service = stack.service().await?;
    let guesser = client_from("127.0.0.6")?;
    let mut statuses = Vec::new();
    for i in 0..60 {
        let body = json!({"email": format!("target{i}@example.com"), "otp": "123456"});
        let (status, retry, answer) = post(&guesser, &service, VERIFY, &[], body).await?;
        if status == 429 {
            assert!(retry.is_some_and(|r| r >= 1), "429 without Retry-After");
        } else {
            assert_eq!(status, 400, "{answer}");
        }
        statuses.push(status);
    }
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert!(
        refused >= 30,
        "60 wrong codes from one address, {refused} refused: {statuses:?}"
    );
    // The limit is per address: another client is still heard.
    let other = client_from("127.0.0.7")?;
    let (status, _, _) = post(
        &other,
        &service,
        VERIFY,
        &[],
        json!({"email": "target0@example.com", "otp": "123456"}),
    )
    .await?;
    assert_eq!(status, 400);
    Ok(())
}

/// The `loginId` of a `/login` answer, if the server gives one.
fn login_id(body: &Value) -> Option<String> {
    body["loginId"].as_str().map(str::to_owned)
}

/// Asks for a code for `email` from `client` until the cooldown lets it
/// through; returns the login answer.
async fn request_code(
    client: &reqwest::Client,
    service: &parley_testkit::ServiceProcess,
    email: &str,
) -> anyhow::Result<Value> {
    let answer = std::sync::Mutex::new(Value::Null);
    wait_until("code issued", Duration::from_secs(10), || async {
        match post(client, service, LOGIN, &[], json!({"email": email})).await {
            Ok((200, _, body)) => {
                if let Ok(mut slot) = answer.lock() {
                    *slot = body;
                }
                true
            }
            _ => false,
        }
    })
    .await?;
    Ok(answer.into_inner().unwrap_or(Value::Null))
}

/// Item 2: asking for a new code must not buy new guesses: wrong codes are
/// counted per account over a day, and back off.
#[tokio::test]
async fn attack_new_codes_do_not_reset_the_account_failure_budget() -> anyhow::Result<()> {
    // The inbox cap would stop the rounds early; this is about guesses.
    let stack = Stack::new()
        .await?
        .with("PARLEY_LOGIN_PER_INBOX_PER_HOUR", "100");
    let mut mailbox = stack.mailbox().await?;
    let service = stack.service().await?;
    let email = "account@example.com";
    let mut evaluated = 0;
    let mut refused = 0;
    // Six rounds, each from a fresh address (so per-address limits do not
    // stop it first): a new code, then five wrong guesses at it.
    for round in 0..6 {
        let client = client_from(&format!("127.0.1.{}", round + 1))?;
        let answer = request_code(&client, &service, email).await?;
        let code = mailbox.code_for(email).await?;
        for _ in 0..5 {
            let mut body = json!({"email": email, "otp": wrong(&code)});
            if let Some(id) = login_id(&answer) {
                body["loginId"] = json!(id);
            }
            let (status, retry, answer) = post(&client, &service, VERIFY, &[], body).await?;
            match status {
                400 if message(&answer).contains("invalid") => evaluated += 1,
                429 => {
                    assert!(retry.is_some(), "429 without Retry-After");
                    refused += 1;
                }
                _ => {}
            }
        }
    }
    // 10 with a login id + 3 without, at most, per account per day.
    assert!(
        evaluated <= 13,
        "{evaluated} wrong codes were checked for one account ({refused} refused)"
    );
    assert!(refused > 0);
    Ok(())
}

/// Item 2: IPv6 clients in one /64 are one client.
#[tokio::test]
async fn attack_ipv6_addresses_of_one_slash64_share_a_budget() -> anyhow::Result<()> {
    let stack = Stack::new()
        .await?
        .with("PARLEY_TRUSTED_PROXY_HOPS", "1")
        .with("PARLEY_LOGIN_PER_IP_PER_HOUR", "2");
    let service = stack.service().await?;
    let http = client_from("127.0.0.1")?;
    let mut issued = 0;
    for i in 1..=6 {
        let from = format!("2001:db8:7:7::{i:x}");
        let (status, _, _) = post(
            &http,
            &service,
            LOGIN,
            &[("x-forwarded-for", &from)],
            json!({"email": format!("v6-{i}@example.com")}),
        )
        .await?;
        issued += usize::from(status == 200);
    }
    assert_eq!(issued, 2, "six addresses of one /64 got {issued} codes");
    let (status, _, body) = post(
        &http,
        &service,
        LOGIN,
        &[("x-forwarded-for", "2001:db8:7:8::1")],
        json!({"email": "v6-other@example.com"}),
    )
    .await?;
    assert_eq!(status, 200, "another /64 is another client: {body}");
    Ok(())
}

/// Item 3: wrong guesses from elsewhere must not burn the code of a login
/// in progress.
#[tokio::test]
async fn attack_wrong_guesses_from_elsewhere_do_not_burn_a_login_in_progress() -> anyhow::Result<()>
{
    let stack = Stack::new().await?;
    let mut mailbox = stack.mailbox().await?;
    let service = stack.service().await?;
    let email = "inprogress@example.com";
    let victim = client_from("127.0.0.8")?;
    let attacker = client_from("127.0.0.9")?;
    let answer = request_code(&victim, &service, email).await?;
    let code = mailbox.code_for(email).await?;
    for _ in 0..6 {
        let (status, _, _) = post(
            &attacker,
            &service,
            VERIFY,
            &[],
            json!({"email": email, "otp": wrong(&code)}),
        )
        .await?;
        assert!(status == 400 || status == 429, "{status}");
    }
    let mut body = json!({"email": email, "otp": code});
    if let Some(id) = login_id(&answer) {
        body["loginId"] = json!(id);
    }
    let (status, _, answer) = post(&victim, &service, VERIFY, &[], body).await?;
    assert_eq!(status, 200, "the victim was locked out: {answer}");
    assert_eq!(answer["user"]["email"], email);
    Ok(())
}

/// Item 3, the legitimate flows: with a login id (more tries, not
/// affected by others' guesses) and without one (as old clients do).
#[tokio::test]
async fn new_and_old_clients_both_log_in() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let mut mailbox = stack.mailbox().await?;
    let service = stack.service().await?;
    let client = client_from("127.0.0.10")?;

    // New style: the login id, a typo, then the code.
    let answer = request_code(&client, &service, "new@example.com").await?;
    let id = login_id(&answer).ok_or_else(|| anyhow::anyhow!("no loginId in {answer}"))?;
    assert!(id.len() >= 22, "the login id is unguessable: {id}");
    let code = mailbox.code_for("new@example.com").await?;
    assert_eq!(code.len(), 8, "codes have 8 digits by default");
    let (status, _, _) = post(
        &client,
        &service,
        VERIFY,
        &[],
        json!({"email": "new@example.com", "otp": wrong(&code), "loginId": id}),
    )
    .await?;
    assert_eq!(status, 400);
    let (status, _, body) = post(
        &client,
        &service,
        VERIFY,
        &[],
        json!({"email": "new@example.com", "otp": code, "loginId": id}),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert!(body["token"].is_string());

    // Old style: {email, otp} only, a typo, then the code.
    request_code(&client, &service, "old@example.com").await?;
    let code = mailbox.code_for("old@example.com").await?;
    let (status, _, _) = post(
        &client,
        &service,
        VERIFY,
        &[],
        json!({"email": "old@example.com", "otp": wrong(&code)}),
    )
    .await?;
    assert_eq!(status, 400);
    let (status, _, body) = post(
        &client,
        &service,
        VERIFY,
        &[],
        json!({"email": "old@example.com", "otp": code}),
    )
    .await?;
    assert_eq!(status, 200, "{body}");

    // A login id that is not a string is refused by name.
    let (status, _, body) = post(
        &client,
        &service,
        VERIFY,
        &[],
        json!({"email": "old@example.com", "otp": 123, "loginId": 5}),
    )
    .await?;
    assert_eq!(status, 400, "{body}");
    assert!(message(&body).contains("loginId"), "{body}");
    Ok(())
}

/// Item 4: `+tag` aliases and case variants of one inbox share one budget
/// of codes; mail still goes to the address given.
#[tokio::test]
async fn attack_aliases_of_one_inbox_do_not_multiply_codes() -> anyhow::Result<()> {
    let stack = Stack::new()
        .await?
        .with("PARLEY_LOGIN_PER_INBOX_PER_HOUR", "3")
        .with("PARLEY_OTP_RESEND_SECS", "0");
    let mut mailbox = stack.mailbox().await?;
    let service = stack.service().await?;
    for (series_no, (series, variants)) in [
        (
            "tags",
            [
                "bomb@example.com",
                "Bomb+1@example.com",
                "bomb+2@EXAMPLE.com",
                "BOMB+x@example.com",
                "bomb+y@example.com",
                "bomb+z@example.com",
            ],
        ),
        (
            "gmail dots",
            [
                "j.doe@gmail.com",
                "jdoe@gmail.com",
                "J.D.O.E+k@googlemail.com",
                "jd.oe@gmail.com",
                "j.d.oe+1@gmail.com",
                "JDOE@GMAIL.COM",
            ],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut issued = Vec::new();
        for (i, email) in variants.iter().enumerate() {
            // Each from its own address, so only the inbox cap can stop it.
            let client = client_from(&format!("127.0.{}.{}", series_no + 2, i + 1))?;
            let (status, retry, body) =
                post(&client, &service, LOGIN, &[], json!({"email": email})).await?;
            if status == 200 {
                issued.push(email.to_ascii_lowercase());
            } else {
                assert_eq!(status, 429, "{series} {email}: {body}");
                assert!(retry.is_some());
            }
        }
        assert_eq!(
            issued.len(),
            3,
            "{series}: one inbox got {} codes",
            issued.len()
        );
        // Delivery uses the address given, tag and dots included.
        for email in &issued {
            mailbox.code_for(email).await?;
        }
    }
    Ok(())
}

/// Item 5: an entry the proxy wrote that is not an address must not let
/// the client's own entry take the trusted position; nor may a second
/// header line.
#[tokio::test]
async fn attack_unparseable_forwarded_entries_cannot_pick_the_client_address() -> anyhow::Result<()>
{
    let stack = Stack::new()
        .await?
        .with("PARLEY_TRUSTED_PROXY_HOPS", "1")
        .with("PARLEY_LOGIN_PER_IP_PER_HOUR", "2");
    let service = stack.service().await?;
    let http = client_from("127.0.0.1")?;
    for (what, lines) in [
        (
            "an unparseable trusted entry",
            ["198.51.100.{i}, unknown", ""],
        ),
        ("a second header line", ["198.51.100.{i}", "203.0.113.9"]),
    ] {
        let mut issued = 0;
        for i in 0..6 {
            let first = lines[0].replace("{i}", &i.to_string());
            let mut headers = vec![("x-forwarded-for", first.as_str())];
            if !lines[1].is_empty() {
                headers.push(("x-forwarded-for", lines[1]));
            }
            let (status, _, _) = post(
                &http,
                &service,
                LOGIN,
                &headers,
                json!({"email": format!("xff{i}-{}@example.com", lines[1].len())}),
            )
            .await?;
            issued += usize::from(status == 200);
        }
        assert_eq!(issued, 2, "{what}: the client chose its address");
    }
    Ok(())
}

/// Item 6: the directory and profiles show no other user's email, and
/// `lastSeenAt` only to people who share a chat that both accepted (item 7:
/// a stranger who opens a chat, or one who is blocked, learns nothing).
#[tokio::test]
async fn attack_directory_reveals_no_emails_or_last_seen() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let mut mailbox = stack.mailbox().await?;
    let service = stack.service().await?;
    let (a, token) = login(&service, &mut mailbox, "dir-a@example.com").await?;
    let (b, _) = login(&service, &mut mailbox, "dir-b@example.com").await?;
    let (c, _) = login(&service, &mut mailbox, "dir-c@example.com").await?;
    let id = |u: &Value| ObjectId::parse_str(u["_id"].as_str().unwrap_or_default());
    let (a_id, b_id, c_id) = (id(&a)?, id(&b)?, id(&c)?);
    let db = stack.ns.mongo().await?;
    let now = DateTime::now();
    db.collection::<mongodb::bson::Document>("users")
        .update_many(
            doc! {"_id": {"$in": [b_id, c_id]}},
            doc! {"$set": {"lastSeenAt": now}},
        )
        .await?;
    db.collection::<mongodb::bson::Document>("chats")
        .insert_one(doc! {
            "_id": ObjectId::new(),
            "members": [a_id, b_id],
            "pairKey": format!("{}:{}", a_id.min(b_id).to_hex(), a_id.max(b_id).to_hex()),
            "lastSeq": 0_i64,
            "createdAt": now,
            "updatedAt": now,
            "acceptedBy": [a_id, b_id],
        })
        .await?;
    // C opened a chat with A and wrote; A never answered.
    db.collection::<mongodb::bson::Document>("chats")
        .insert_one(doc! {
            "_id": ObjectId::new(),
            "members": [c_id, a_id],
            "pairKey": format!("{}:{}", a_id.min(c_id).to_hex(), a_id.max(c_id).to_hex()),
            "lastSeq": 1_i64,
            "createdAt": now,
            "updatedAt": now,
            "acceptedBy": [c_id],
        })
        .await?;

    let (status, all) = call(
        &service,
        Method::GET,
        "/api/v1/user/all",
        Some(&token),
        None,
    )
    .await?;
    assert_eq!(status, 200, "{all}");
    let all = all.as_array().cloned().unwrap_or_default();
    assert_eq!(all.len(), 3);
    for user in &all {
        assert!(user.get("email").is_none(), "the directory shows {user}");
        assert!(user["name"].is_string() && user["_id"].is_string());
        let shares_a_chat = user["_id"] == b["_id"];
        assert_eq!(
            user.get("lastSeenAt").is_some(),
            shares_a_chat,
            "lastSeenAt of {user}"
        );
    }
    for (other, shares) in [(&b, true), (&c, false)] {
        let path = format!("/api/v1/user/{}", other["_id"].as_str().unwrap_or_default());
        let (status, one) = call(&service, Method::GET, &path, Some(&token), None).await?;
        assert_eq!(status, 200);
        assert!(one.get("email").is_none(), "{one}");
        assert_eq!(one.get("lastSeenAt").is_some(), shares, "{one}");
    }
    let (status, found) = call(
        &service,
        Method::POST,
        "/api/v1/users/lookup",
        Some(&token),
        Some(json!({"ids": [b["_id"], c["_id"]]})),
    )
    .await?;
    assert_eq!(status, 200);
    for user in found["users"].as_array().cloned().unwrap_or_default() {
        assert!(user.get("email").is_none(), "lookup shows {user}");
    }
    // Only /me shows an email.
    let (_, me) = call(&service, Method::GET, "/api/v1/me", Some(&token), None).await?;
    assert_eq!(me["email"], "dir-a@example.com");
    Ok(())
}

/// Item 6: deployments that want no directory can switch it off.
#[tokio::test]
async fn the_directory_can_be_switched_off() -> anyhow::Result<()> {
    let stack = Stack::new().await?.with("PARLEY_USER_DIRECTORY", "false");
    let mut mailbox = stack.mailbox().await?;
    let service = stack.service().await?;
    let (me, token) = login(&service, &mut mailbox, "nodir@example.com").await?;
    let (status, body) = call(
        &service,
        Method::GET,
        "/api/v1/user/all",
        Some(&token),
        None,
    )
    .await?;
    assert_eq!(status, 403, "{body}");
    assert!(message(&body).contains("directory"), "{body}");
    let path = format!("/api/v1/user/{}", me["_id"].as_str().unwrap_or_default());
    let (status, _) = call(&service, Method::GET, &path, Some(&token), None).await?;
    assert_eq!(status, 200, "profiles by id still work");
    Ok(())
}

/// Item 12: every answer, errors and operational routes included, carries
/// the security headers.
#[tokio::test]
async fn attack_responses_carry_security_headers() -> anyhow::Result<()> {
    let stack = Stack::new().await?;
    let service = stack.service().await?;
    let http = service.http();
    for request in [
        http.get(service.url("/healthz")),
        http.get(service.url("/metrics")),
        http.get(service.url("/.well-known/jwks.json")),
        http.get(service.url("/api/v1/no-such-route")),
        http.get(service.url("/api/v1/me")),
        http.post(service.url(LOGIN)).json(&json!({"email": 5})),
        http.post(service.url(LOGIN))
            .json(&json!({"email": "headers@example.com"})),
    ] {
        let response = request.send().await?;
        let url = response.url().to_string();
        let headers = response.headers();
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(get("x-content-type-options"), "nosniff", "{url}");
        assert_eq!(get("referrer-policy"), "no-referrer", "{url}");
        assert_eq!(get("x-frame-options"), "DENY", "{url}");
        assert!(
            get("content-security-policy").contains("frame-ancestors 'none'"),
            "{url}"
        );
    }
    Ok(())
}
