//! A socket lives no longer than its token.
//!
//! - **Expiry.** Each socket gets one timer, set at connect for its token's
//!   `exp`: then the client hears `authError` `{code: "token_expired"}` and
//!   the socket is closed (the client reconnects with a fresh token).
//! - **Revocation.** A logout moves the user's token generation on and is
//!   announced on a Redis channel that every pod follows: each pod closes
//!   its own sockets of that user whose token is older, with `authError`
//!   `{code: "token_revoked"}`. When the subscription is (re)made, messages
//!   may have been missed, so every local socket is checked once.
//!
//! Nothing here runs per event: typing and receipts never wait on it.

use std::collections::HashMap;

use parley_common::revocation::is_revoked;
use serde_json::json;
use socketioxide::extract::SocketRef;
use tokio_util::sync::CancellationToken;

use crate::fanout::{Adapter, user_room};
use crate::realtime::socket::{SocketUser, socket_user};
use crate::state::AppState;

/// Why the server closes a socket for its token; the client sees the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The token's `exp` passed.
    Expired,
    /// The user logged out after the token was issued.
    Revoked,
}

impl Ended {
    /// The stable code in `authError`.
    pub fn code(self) -> &'static str {
        match self {
            Self::Expired => "token_expired",
            Self::Revoked => "token_revoked",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Self::Expired => "token expired: reconnect with a fresh token",
            Self::Revoked => "token revoked: log in again",
        }
    }
}

/// Tells the client why, then closes the socket.
pub fn end(socket: &SocketRef<Adapter>, why: Ended) {
    metrics::counter!("chat_sockets_ended_total", "reason" => why.code()).increment(1);
    let _ = socket.emit(
        "authError",
        &json!({ "code": why.code(), "message": why.message() }),
    );
    let _ = socket.clone().disconnect();
}

/// Pure: how long from `now` (seconds since the epoch) until `exp`.
pub fn until_expiry(exp: i64, now_millis: i64) -> std::time::Duration {
    let left = exp.saturating_mul(1000).saturating_sub(now_millis);
    std::time::Duration::from_millis(u64::try_from(left).unwrap_or(0))
}

/// Closes `socket` when its token expires, unless `closed` fires first.
pub fn expire(socket: SocketRef<Adapter>, user: &SocketUser, closed: CancellationToken) {
    let wait = until_expiry(user.0.claims.exp, chrono::Utc::now().timestamp_millis());
    tokio::spawn(async move {
        tokio::select! {
            () = closed.cancelled() => {}
            () = tokio::time::sleep(wait) => end(&socket, Ended::Expired),
        }
    });
}

/// Closes this pod's sockets of `user` whose token is older than `generation`.
pub fn close_revoked(state: &AppState, user: &str, generation: u64) {
    let Ok(id) = mongodb::bson::oid::ObjectId::parse_str(user) else {
        return;
    };
    for socket in state.fanout.io().local().to(user_room(&id)).sockets() {
        if let Some(SocketUser(s)) = socket_user(&socket)
            && is_revoked(s.claims.generation, generation)
        {
            end(&socket, Ended::Revoked);
        }
    }
}

/// Checks every local socket's token generation once (after messages may
/// have been missed).
pub async fn sweep(state: &AppState) {
    let mut by_user: HashMap<String, Vec<SocketRef<Adapter>>> = HashMap::new();
    for socket in state.fanout.io().local().sockets() {
        if let Some(SocketUser(s)) = socket_user(&socket) {
            by_user.entry(s.hex.clone()).or_default().push(socket);
        }
    }
    for (user, sockets) in by_user {
        match state.revocations.current(&user).await {
            Ok(current) => {
                for socket in sockets {
                    if let Some(SocketUser(s)) = socket_user(&socket)
                        && is_revoked(s.claims.generation, current)
                    {
                        end(&socket, Ended::Revoked);
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "revocation sweep stopped");
                return;
            }
        }
    }
}

/// Follows logouts until `shutdown`.
pub fn follow_revocations(
    state: &AppState,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let on_revoked = {
        let state = state.clone();
        move |user: String, generation: u64| close_revoked(&state, &user, generation)
    };
    let on_resubscribed = {
        let state = state.clone();
        move || {
            let state = state.clone();
            tokio::spawn(async move { sweep(&state).await });
        }
    };
    state
        .revocations
        .watch(shutdown, on_revoked, on_resubscribed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_counted_from_now() {
        assert_eq!(
            until_expiry(100, 90_500),
            std::time::Duration::from_millis(9_500)
        );
        assert_eq!(until_expiry(100, 100_000), std::time::Duration::ZERO);
        assert_eq!(until_expiry(100, 200_000), std::time::Duration::ZERO);
        assert_eq!(Ended::Expired.code(), "token_expired");
        assert_eq!(Ended::Revoked.code(), "token_revoked");
    }
}
