//! Property test: generated JSON (and non-JSON) thrown at every JSON
//! endpoint of the real binary never gets a 5xx, and every error is JSON
//! with a message.

mod support;

use proptest::prelude::*;
use serde_json::Value;
use support::Stack;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,80}".prop_map(Value::String),
        "[a-z0-9.]{1,20}@[a-z]{1,10}\\.[a-z]{2,4}".prop_map(Value::String),
        "[0-9]{6}".prop_map(Value::String),
        "[0-9]{8}".prop_map(Value::String),
        "[0-9a-f]{32}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("email".to_owned()),
                    Just("otp".to_owned()),
                    Just("loginId".to_owned()),
                    Just("name".to_owned()),
                    Just("ids".to_owned()),
                    ".{0,10}"
                ],
                inner,
                0..5,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn generated_input_never_gets_a_5xx() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let stack = runtime.block_on(Stack::new())?;
    let (service, token) = runtime.block_on(async {
        let mut mailbox = stack.mailbox().await?;
        let service = stack.service().await?;
        let (_, token) = support::login(&service, &mut mailbox, "fuzz@example.com").await?;
        anyhow::Ok((service, token))
    })?;
    let endpoints = [
        "/api/v1/login",
        "/api/v1/verify",
        "/api/v1/update/user",
        "/api/v1/users/lookup",
    ];
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 96,
        ..ProptestConfig::default()
    });
    runner
        .run(
            &(json_value(), 0..endpoints.len(), any::<bool>(), ".{0,40}"),
            |(body, which, raw, text)| {
                let path = endpoints[which];
                let (status, answer) = runtime
                    .block_on(async {
                        let request = service.http().post(service.url(path)).bearer_auth(&token);
                        let request = if raw {
                            request
                                .header("content-type", "application/json")
                                .body(text.clone())
                        } else {
                            request.json(&body)
                        };
                        let response = request.send().await?;
                        let status = response.status().as_u16();
                        anyhow::Ok((
                            status,
                            response.json::<Value>().await.unwrap_or(Value::Null),
                        ))
                    })
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(
                    status < 500,
                    "{path} answered {status} to {body} / {text:?}: {answer}"
                );
                if status >= 400 {
                    prop_assert!(answer["message"].is_string(), "{path} {status}: {answer}");
                }
                Ok(())
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
