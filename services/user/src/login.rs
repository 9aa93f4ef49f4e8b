//! Logging in by one-time code, sessions and the profile's name: the rules
//! between the routes (`http.rs`, which only translates) and the stores.
//! Every refusal is a [`DomainError`].

use mongodb::bson::oid::ObjectId;
use parley_common::events::{OtpRequested, UserUpdated};

use crate::domain;
use crate::error::DomainError;
use crate::state::AppState;
use crate::store::UserDoc;

/// A user with a fresh token.
#[derive(Debug, Clone)]
pub struct Session {
    /// The user.
    pub user: UserDoc,
    /// A token at the user's current generation.
    pub token: String,
}

/// Sends a code to `email` (as typed) for a client of address group
/// `group`; returns the login id that binds the code to this client. The
/// answer is the same whether or not the address belongs to a user.
pub async fn request_code(
    state: &AppState,
    email: &str,
    group: &str,
) -> Result<String, DomainError> {
    let email = domain::normalize_email(email)?;
    let admission = state.codes.admit(&domain::inbox_key(&email), group).await?;
    let limits = state.codes.limits();
    let code = domain::generate_code(limits.digits)
        .map_err(|e| DomainError::Internal(format!("no randomness: {e}")))?;
    let login_id = domain::generate_login_id()
        .map_err(|e| DomainError::Internal(format!("no randomness: {e}")))?;
    let login_key = state.hasher.login_key(&login_id);
    let hash = state.hasher.hash(&email, &code);
    state.codes.store(&email, &login_key, &hash).await?;
    let ttl =
        chrono::Duration::from_std(limits.otp_ttl).unwrap_or_else(|_| chrono::Duration::minutes(5));
    let event = OtpRequested {
        email: email.clone(),
        code,
        expires_at: chrono::Utc::now() + ttl,
    };
    if let Err(error) = state.amqp.publish(event).await {
        // Nothing half-done: a code nobody can receive must not stay usable.
        if let Err(cleanup) = state
            .codes
            .withdraw(&email, &login_key, &hash, &admission)
            .await
        {
            tracing::error!(error = %cleanup, "could not withdraw an unsent code");
        }
        return Err(DomainError::Unavailable {
            dependency: "rabbitmq",
            detail: error.to_string(),
        });
    }
    metrics::counter!("user_codes_issued_total").increment(1);
    Ok(login_id)
}

/// Checks `otp` for `email` (both as sent; `login_id` when the client has
/// one) from a client of address group `group`; a right code logs the user
/// in, creating the account on first login.
pub async fn verify_code(
    state: &AppState,
    email: &str,
    otp: &str,
    login_id: Option<&str>,
    group: &str,
) -> Result<Session, DomainError> {
    let email = domain::normalize_email(email)?;
    let otp = domain::validate_code(otp, state.codes.limits().digits)?;
    let login_key = match login_id {
        Some(id) => Some(state.hasher.login_key(domain::validate_login_id(id)?)),
        None => None,
    };
    let attempt = match state
        .codes
        .reserve(&email, login_key.as_deref(), group)
        .await
    {
        Err(DomainError::Burned) => {
            metrics::counter!("user_codes_burned_total").increment(1);
            return Err(DomainError::Burned);
        }
        other => other?,
    };
    if !state.hasher.matches(&email, otp, &attempt.hash) {
        metrics::counter!("user_code_failures_total").increment(1);
        return Err(DomainError::WrongCode);
    }
    if !state.codes.settle(&email, &attempt).await? {
        return Err(DomainError::WrongCode);
    }
    let user = state
        .users
        .find_or_create(&email, &domain::default_name(&email))
        .await?;
    session(state, user).await
}

/// Renames the user `id` to `name` (as sent), announces it, and returns
/// a token carrying the new name.
pub async fn rename(state: &AppState, id: &ObjectId, name: &str) -> Result<Session, DomainError> {
    let name = domain::validate_name(name)?;
    let user = state
        .users
        .rename(id, &name)
        .await?
        .ok_or(DomainError::UnknownCaller)?;
    let event = UserUpdated {
        user_id: user.id.to_hex(),
        name: user.name.clone(),
        email: user.email.clone(),
    };
    if let Err(error) = state.amqp.publish(event).await {
        // The rename is stored; caches expire on their own.
        metrics::counter!("user_event_publish_failed_total").increment(1);
        tracing::error!(%error, user = %user.id, "user.updated.v1 not published");
    }
    session(state, user).await
}

/// Ends every session of user `sub`: their tokens stop working everywhere
/// and their sockets are closed (see [`parley_common::revocation`]).
pub async fn logout(state: &AppState, sub: &str) -> Result<(), DomainError> {
    state
        .revocations
        .revoke(sub, state.config.signer.lifetime())
        .await?;
    metrics::counter!("user_logouts_total").increment(1);
    Ok(())
}

/// `user` with a token at their current generation.
async fn session(state: &AppState, user: UserDoc) -> Result<Session, DomainError> {
    let sub = user.id.to_hex();
    let generation = state.revocations.current(&sub).await?;
    let token = state
        .config
        .signer
        .sign_at(
            &sub,
            &user.email,
            &user.name,
            generation,
            chrono::Utc::now().timestamp(),
        )
        .map_err(|e| DomainError::Internal(e.to_string()))?;
    Ok(Session { user, token })
}
