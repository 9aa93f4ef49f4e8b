//! Bearer-token authentication for axum routes.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::api_error::ApiError;
use crate::revocation::{RevocationError, Revocations};
use crate::token::{Claims, TokenError, TokenVerifier};

/// The verified claims of the request's `Authorization: Bearer` token:
/// signature, expiry, issuer and audience checked, and not revoked by a
/// logout (one cached Redis read, see [`Revocations::check`]).
///
/// Any state `S` from which a [`TokenVerifier`] and [`Revocations`] can be
/// taken works.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Claims);

/// Pulls the token out of an `Authorization` header value.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The 401 answer for a refused token.
pub fn refusal(error: &TokenError) -> ApiError {
    match error {
        TokenError::Expired => ApiError::unauthorized("token expired"),
        TokenError::UnknownKey => ApiError::unauthorized("token signed by an unknown key"),
        TokenError::WrongScope => ApiError::unauthorized("token not meant for this service"),
        _ => ApiError::unauthorized("invalid token"),
    }
}

/// The answer for a token whose generation was not accepted.
pub fn revocation_refusal(error: &RevocationError) -> ApiError {
    match error {
        RevocationError::Revoked => ApiError::unauthorized("token revoked: log in again"),
        RevocationError::Unavailable(detail) => ApiError::unavailable("redis", detail),
    }
}

/// A verified token whose subject is not a user id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("token subject is not a user id")]
pub struct NotAUser;

impl From<NotAUser> for ApiError {
    fn from(error: NotAUser) -> Self {
        ApiError::unauthorized(error.to_string())
    }
}

/// The user id of verified claims (401 at the edge when the subject is not one).
pub fn caller(claims: &Claims) -> Result<mongodb::bson::oid::ObjectId, NotAUser> {
    mongodb::bson::oid::ObjectId::parse_str(&claims.sub).map_err(|_| NotAUser)
}

impl<S> FromRequestParts<S> for Authenticated
where
    TokenVerifier: FromRef<S>,
    Revocations: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization header"))?;
        let value = header
            .to_str()
            .map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
        let token = bearer(value)
            .ok_or_else(|| ApiError::unauthorized("expected Authorization: Bearer <token>"))?;
        let verifier = TokenVerifier::from_ref(state);
        let claims = verifier.verify(token).map_err(|e| refusal(&e))?;
        Revocations::from_ref(state)
            .check(&claims)
            .await
            .map_err(|e| revocation_refusal(&e))?;
        Ok(Authenticated(claims))
    }
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
    }
}
