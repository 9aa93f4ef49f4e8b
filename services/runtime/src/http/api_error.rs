//! The JSON error answer every route gives: `{ "message": ... }`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An HTTP error with a message safe to show to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// The status code.
    pub status: StatusCode,
    /// The message put in the JSON body.
    pub message: String,
    /// Seconds for a `Retry-After` header (429 and 503).
    pub retry_after: Option<u64>,
    /// What went wrong, for the log only: the server's middleware
    /// ([`log_failures`]) logs it once; it is never sent.
    pub detail: Option<Logged>,
}

/// The detail of a failure, carried to the logging middleware in the
/// response's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// The dependency that did not answer (`None`: the service's own failure).
    pub dependency: Option<&'static str>,
    /// What went wrong.
    pub detail: String,
}

/// Middleware: logs the failures handlers answered with, once, with the
/// detail the client never sees (a dependency that did not answer as a
/// warning, the service's own failure as an error).
pub async fn log_failures(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = next.run(req).await;
    if let Some(logged) = response.extensions().get::<Logged>() {
        match logged.dependency {
            Some(dependency) => {
                tracing::warn!(%method, path, dependency, detail = %logged.detail, "dependency unavailable");
            }
            None => tracing::error!(%method, path, detail = %logged.detail, "internal error"),
        }
    }
    response
}

#[derive(Serialize)]
struct Body<'a> {
    message: &'a str,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
            detail: None,
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 403 Forbidden.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 404 Not Found.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 429 Too Many Requests with Retry-After.
    pub fn too_many(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            retry_after: Some(retry_after_secs.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, message)
        }
    }

    /// 503 Service Unavailable: a dependency did not answer. The detail
    /// is logged by [`log_failures`], never shown to clients.
    pub fn unavailable(dependency: &'static str, detail: impl std::fmt::Display) -> Self {
        Self {
            retry_after: Some(1),
            detail: Some(Logged {
                dependency: Some(dependency),
                detail: detail.to_string(),
            }),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{dependency} is unavailable, try again shortly"),
            )
        }
    }

    /// 500 Internal Server Error. The detail is logged by
    /// [`log_failures`]; the client sees a generic message.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self {
            detail: Some(Logged {
                dependency: None,
                detail: detail.to_string(),
            }),
            ..Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(Body {
                message: &self.message,
            }),
        )
            .into_response();
        if let Some(secs) = self.retry_after
            && let Ok(value) = secs.to_string().parse()
        {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, value);
        }
        if let Some(logged) = self.detail {
            response.extensions_mut().insert(logged);
        }
        response
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        use axum::extract::rejection::JsonRejection as R;
        let status = match &rejection {
            R::BytesRejection(_) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            R::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, rejection.body_text())
    }
}

/// A JSON object request body of type `T`. Unlike axum's `Json`, every refusal is
/// answered like every other error, JSON `{ "message": ... }`: 413 when too
/// large, 415 without a JSON content type, 400 when the body is not JSON or
/// not of `T`'s shape, with a message that names the field
/// (`email is required`, `loginId must be a string`).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonBody<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<serde_json::Value>::from_request(req, state).await?;
        if !value.is_object() {
            // serde would also read a struct from an array, by position.
            return Err(ApiError::bad_request("expected a JSON object"));
        }
        serde_path_to_error::deserialize(value)
            .map(Self)
            .map_err(|error| {
                ApiError::bad_request(shape_message(
                    &error.path().to_string(),
                    &error.inner().to_string(),
                ))
            })
    }
}

/// Pure: the message for a JSON body of the wrong shape, from where serde
/// stopped (`path`, `.` for the whole body) and what it said.
pub fn shape_message(path: &str, serde_message: &str) -> String {
    let root = path.is_empty() || path == ".";
    let field = |name: &str| {
        if root {
            name.to_owned()
        } else {
            format!("{path}.{name}")
        }
    };
    if let Some(rest) = serde_message.strip_prefix("missing field `")
        && let Some(name) = rest.split('`').next()
    {
        return format!("{} is required", field(name));
    }
    if let Some(rest) = serde_message.strip_prefix("invalid type: ") {
        let expected = rest.split_once(", expected ").map(|(_, e)| e);
        return match (root, expected) {
            (true, Some(e)) if e.starts_with("struct") || e.contains("map") => {
                "expected a JSON object".to_owned()
            }
            (true, Some(e)) => format!("the body must be {e}"),
            (false, _) if rest.starts_with("null,") => format!("{path} is required"),
            (false, Some(e)) => format!("{path} must be {e}"),
            (_, None) => serde_message.to_owned(),
        };
    }
    if root {
        serde_message.to_owned()
    } else {
        format!("{path}: {serde_message}")
    }
}

/// Answers JSON 404 for unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_messages_name_the_field() {
        assert_eq!(
            shape_message(".", "missing field `email`"),
            "email is required"
        );
        assert_eq!(
            shape_message("email", "invalid type: integer `5`, expected a string"),
            "email must be a string"
        );
        assert_eq!(
            shape_message("email", "invalid type: null, expected a string"),
            "email is required"
        );
        assert_eq!(
            shape_message(".", "invalid type: sequence, expected struct Login"),
            "expected a JSON object"
        );
        assert_eq!(
            shape_message("a.b", "missing field `c`"),
            "a.b.c is required"
        );
        assert_eq!(
            shape_message("ids", "invalid length 0, expected more"),
            "ids: invalid length 0, expected more"
        );
    }
}
