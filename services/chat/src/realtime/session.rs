//! A socket lives no longer than its token.
//!
//! - **Expiry.** One task per pod looks at this pod's sockets every
//!   [`EXPIRY_SWEEP_EVERY`]: a socket whose token's `exp` passed hears
//!   `authError` `{code: "token_expired"}` and is closed (the client
//!   reconnects with a fresh token). A socket holds no timer or task of its
//!   own for this: at 10,000 sockets a sweep takes about a millisecond.
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

/// How often this pod's sockets are checked for expired tokens (a socket
/// outlives its token by at most this).
pub const EXPIRY_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Pure: whether a token with `exp` (seconds since the epoch) has expired
/// at `now_millis`; no leeway, as at the handshake.
pub fn expired(exp: i64, now_millis: i64) -> bool {
    exp.saturating_mul(1000) <= now_millis
}

/// Closes this pod's sockets whose token expired; how many.
pub fn close_expired(state: &AppState, now_millis: i64) -> usize {
    let mut closed = 0;
    for socket in state.fanout.io().local().sockets() {
        if let Some(SocketUser(s)) = socket_user(&socket)
            && expired(s.claims.exp, now_millis)
        {
            end(&socket, Ended::Expired);
            closed += 1;
        }
    }
    closed
}

/// Sweeps for expired tokens every [`EXPIRY_SWEEP_EVERY`] until `shutdown`.
pub fn expire_tokens(state: &AppState, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EXPIRY_SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    close_expired(&state, chrono::Utc::now().timestamp_millis());
                }
            }
        }
    })
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
    fn a_token_expires_at_its_exp_without_leeway() {
        assert!(!expired(100, 99_999));
        assert!(expired(100, 100_000));
        assert!(expired(100, 200_000));
        assert!(!expired(i64::MAX, i64::MAX - 1));
        assert_eq!(Ended::Expired.code(), "token_expired");
        assert_eq!(Ended::Revoked.code(), "token_revoked");
    }
}
