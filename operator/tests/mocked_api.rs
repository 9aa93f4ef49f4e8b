//! Reconcile against a mocked API server (tower-test), for the answers a
//! real server rarely gives on demand: a 409 conflict, a 500, and no answer
//! at all. Every other request gets what an empty namespace would answer.
//! These run in milliseconds and need no cluster.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use parley_operator::api::{ChatCluster, ChatClusterSpec};
use parley_operator::reconcile::{Context, Error, error_policy, reconcile};
use serde_json::{Value, json};

/// One request the mock saw.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    body: Value,
}

/// What the scenario answers to a request, when not the default.
enum Answer {
    /// An API error with this status code.
    Status(u16),
    /// A transport failure: the connection broke, no answer came.
    Broken,
    /// No answer ever: the request hangs.
    Hang,
}

type Rule = Box<dyn Fn(&Method, &str) -> Option<Answer> + Send + Sync>;

const NS: &str = "team";

fn cluster() -> ChatCluster {
    let mut cc = ChatCluster::new("demo", ChatClusterSpec::default());
    cc.metadata.namespace = Some(NS.into());
    cc.metadata.uid = Some("0000-uid".into());
    cc.metadata.generation = Some(1);
    cc
}

fn status_body(code: u16) -> Value {
    let reason = match code {
        404 => "NotFound",
        409 => "Conflict",
        _ => "InternalError",
    };
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("mocked {code}"), "reason": reason, "code": code,
    })
}

/// What an empty namespace answers: nothing exists, lists are empty,
/// writes succeed and return what was written.
fn default_answer(seen: &Seen, cc: &ChatCluster) -> (u16, Value) {
    let path = seen.path.split('?').next().unwrap_or_default();
    if path == "/apis" {
        return (
            200,
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": "autoscaling", "versions": [{"groupVersion": "autoscaling/v2", "version": "v2"}],
                 "preferredVersion": {"groupVersion": "autoscaling/v2", "version": "v2"}},
                {"name": "policy", "versions": [{"groupVersion": "policy/v1", "version": "v1"}],
                 "preferredVersion": {"groupVersion": "policy/v1", "version": "v1"}},
            ]}),
        );
    }
    if path.contains("/chatclusters/") {
        return (200, serde_json::to_value(cc).unwrap_or_default());
    }
    match seen.method {
        Method::GET => {
            // a collection path ends in the resource (plural), an object's in its name
            let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
            let is_list = segments
                .iter()
                .rposition(|s| *s == "namespaces")
                .is_none_or(|i| segments.len() == i + 3);
            if is_list {
                (
                    200,
                    json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []}),
                )
            } else {
                (404, status_body(404))
            }
        }
        Method::POST | Method::PATCH | Method::PUT => {
            let mut body = seen.body.clone();
            if body.get("metadata").is_none() {
                body["metadata"] = json!({});
            }
            body["metadata"]["resourceVersion"] = json!("2");
            (
                if seen.method == Method::POST {
                    201
                } else {
                    200
                },
                body,
            )
        }
        _ => (200, status_body(200)),
    }
}

/// A client whose API server is `rules`, then [`default_answer`]; returns
/// the client and the requests seen, in order.
fn mocked(rules: Vec<Rule>) -> (Client, Arc<Mutex<Vec<Seen>>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let cc = cluster();
        // Requests left hanging keep their responders here, unanswered.
        let mut hanging = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = http_body_util::BodyExt::collect(body)
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let path = parts
                .uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let request = Seen {
                method: parts.method.clone(),
                path: path.clone(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            if let Ok(mut log) = log.lock() {
                log.push(request.clone());
            }
            let answer = rules.iter().find_map(|r| r(&parts.method, &path));
            let (code, body) = match answer {
                Some(Answer::Broken) => {
                    send.send_error(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "mocked: connection reset",
                    ));
                    continue;
                }
                Some(Answer::Hang) => {
                    hanging.push(send);
                    continue;
                }
                Some(Answer::Status(code)) => (code, status_body(code)),
                None => default_answer(&request, &cc),
            };
            let mut response =
                Response::new(Body::from(serde_json::to_vec(&body).unwrap_or_default()));
            *response.status_mut() =
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            send.send_response(response);
        }
    });
    (Client::new(service, NS), seen)
}

/// Reconciles the default ChatCluster once against `rules`, bounded in time.
async fn reconcile_with(rules: Vec<Rule>) -> (Result<Action, Error>, Vec<Seen>, Arc<Context>) {
    let (client, seen) = mocked(rules);
    let ctx = Arc::new(
        Context::new(client, Duration::from_secs(300), "test")
            .with_reconcile_timeout(Duration::from_secs(2)),
    );
    let obj = Arc::new(DeserializeGuard(Ok(cluster())));
    let result = tokio::time::timeout(Duration::from_secs(10), reconcile(obj, ctx.clone()))
        .await
        .expect("reconcile finished");
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    (result, seen, ctx)
}

fn rule(method: Method, path_part: &'static str, answer: fn() -> Answer) -> Rule {
    Box::new(move |m, p| (*m == method && p.contains(path_part)).then(answer))
}

/// The status the reconcile wrote last, as JSON.
fn last_status(seen: &[Seen]) -> Value {
    seen.iter()
        .rev()
        .find(|s| s.method == Method::PATCH && s.path.contains("/chatclusters/demo/status"))
        .map(|s| s.body["status"].clone())
        .unwrap_or(Value::Null)
}

fn condition(status: &Value, t: &str) -> (String, String, String) {
    let c = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == t)
        .cloned()
        .unwrap_or_default();
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
    (s("status"), s("reason"), s("message"))
}

fn applied(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .filter(|s| s.method == Method::PATCH && s.path.contains("fieldManager=parley-operator"))
        .filter(|s| !s.path.contains("dryRun"))
        .map(|s| s.path.split('?').next().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn an_empty_namespace_converges_in_one_pass() {
    let (result, seen, _) = reconcile_with(Vec::new()).await;
    assert!(result.is_ok(), "{result:?}");
    let applied = applied(&seen);
    for child in [
        "/apis/apps/v1/namespaces/team/deployments/demo-chat",
        "/apis/apps/v1/namespaces/team/statefulsets/demo-mongodb",
        "/api/v1/namespaces/team/services/demo-user",
    ] {
        assert!(
            applied.iter().any(|p| p == child),
            "{child} not applied: {applied:#?}"
        );
    }
    let created: Vec<&str> = seen
        .iter()
        .filter(|s| s.method == Method::POST && s.path.contains("/secrets"))
        .filter_map(|s| s.body["metadata"]["name"].as_str())
        .collect();
    assert_eq!(created, ["demo-jwt", "demo-generated"]);
}

#[tokio::test]
async fn a_conflict_on_one_child_leaves_the_others_applied_and_is_reported() {
    let (result, seen, ctx) =
        reconcile_with(vec![rule(Method::PATCH, "/deployments/demo-chat?", || {
            Answer::Status(409)
        })])
        .await;
    let error = result.expect_err("a failed apply fails the reconcile");
    assert_eq!(error.metric_label(), "apply", "{error}");
    assert!(error.to_string().contains("demo-chat"), "{error}");
    // the writes after the refused one were still made
    let applied = applied(&seen);
    for child in ["deployments/demo-mail", "networkpolicies/demo-mongodb"] {
        assert!(
            applied.iter().any(|p| p.ends_with(child)),
            "{child} not applied after the conflict: {applied:#?}"
        );
    }
    let degraded = condition(&last_status(&seen), "Degraded");
    assert_eq!(
        (degraded.0.as_str(), degraded.1.as_str()),
        ("True", "ApplyFailed"),
        "{degraded:?}"
    );
    assert!(degraded.2.contains("demo-chat"), "{degraded:?}");
    // retried with backoff: 1 s, then 2 s; the error is counted by its kind
    let obj = Arc::new(DeserializeGuard(Ok(cluster())));
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let exported = recorder.handle();
    let first =
        metrics::with_local_recorder(&recorder, || error_policy(obj.clone(), &error, ctx.clone()));
    assert_eq!(first, Action::requeue(Duration::from_secs(1)));
    let rendered = exported.render();
    assert!(
        rendered.contains(r#"parley_operator_reconcile_errors_total{kind="apply"} 1"#),
        "{rendered}"
    );
    assert_eq!(
        error_policy(obj, &error, ctx),
        Action::requeue(Duration::from_secs(2))
    );
}

#[tokio::test]
async fn a_conflicting_status_write_is_a_conflict() {
    let (result, seen, _) = reconcile_with(vec![rule(
        Method::PATCH,
        "/chatclusters/demo/status",
        || Answer::Status(409),
    )])
    .await;
    let error = result.expect_err("the status was not written");
    assert_eq!(error.metric_label(), "conflict", "{error}");
    // everything else was applied before the status
    assert!(
        applied(&seen)
            .iter()
            .any(|p| p.ends_with("deployments/demo-user"))
    );
}

#[tokio::test]
async fn a_500_before_apply_writes_nothing_but_the_status() {
    let (result, seen, _) = reconcile_with(vec![rule(Method::GET, "/secrets/demo-jwt", || {
        Answer::Status(500)
    })])
    .await;
    let error = result.expect_err("the generated Secrets could not be read");
    assert_eq!(error.metric_label(), "api", "{error}");
    assert!(error.to_string().contains("demo-jwt"), "{error}");
    let children: Vec<String> = applied(&seen)
        .into_iter()
        .filter(|p| !p.contains("/chatclusters/"))
        .collect();
    assert!(
        children.is_empty(),
        "applied despite the failure: {children:#?}"
    );
    let degraded = condition(&last_status(&seen), "Degraded");
    assert_eq!(
        (degraded.0.as_str(), degraded.1.as_str()),
        ("True", "PrepareFailed"),
        "{degraded:?}"
    );
    assert!(degraded.2.contains("demo-jwt"), "{degraded:?}");
}

#[tokio::test]
async fn no_answer_from_discovery_is_a_transport_error_and_applies_nothing() {
    let discovery: Rule =
        Box::new(|m, p| (*m == Method::GET && p == "/apis").then_some(Answer::Broken));
    let (result, seen, _) = reconcile_with(vec![discovery]).await;
    let error = result.expect_err("discovery failed");
    assert_eq!(error.metric_label(), "transport", "{error}");
    let children: Vec<String> = applied(&seen)
        .into_iter()
        .filter(|p| !p.contains("/chatclusters/"))
        .collect();
    assert!(
        children.is_empty(),
        "applied without discovery: {children:#?}"
    );
}

#[tokio::test]
async fn a_call_that_never_answers_fails_the_reconcile_in_its_time_bound() {
    // Without its own bound the reconcile would hang past the harness's 10 s.
    let (result, seen, ctx) = reconcile_with(vec![rule(Method::GET, "/secrets/demo-jwt", || {
        Answer::Hang
    })])
    .await;
    let error = result.expect_err("a hung call cannot make the reconcile succeed");
    assert!(matches!(error, Error::TimedOut(_)), "{error:?}");
    assert_eq!(error.metric_label(), "timeout");
    assert!(
        applied(&seen).is_empty(),
        "nothing applied: {:?}",
        applied(&seen)
    );
    // It is retried like any other failure.
    let obj = Arc::new(DeserializeGuard(Ok(cluster())));
    assert_eq!(
        error_policy(obj, &error, ctx),
        Action::requeue(Duration::from_secs(1))
    );
}
