//! The handshake check, the user's room, and presence on connect and
//! disconnect.

use std::sync::Arc;

use mongodb::bson::oid::ObjectId;
use parley_common::revocation::RevocationError;
use parley_common::token::TokenVerifier;
use serde_json::Value;
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::handler::ConnectHandler;

use crate::fanout::redis_driver::ResilientDriver;
use crate::fanout::{Adapter, user_room};
use crate::presence::Transition;
use crate::realtime::events::Dispatch;
use crate::realtime::lifecycle::{self, Action};
use crate::realtime::socket::{SocketState, SocketUser, socket_user};
use crate::state::AppState;

/// Why a handshake was refused; the client sees the message in `connect_error`.
#[derive(Debug)]
struct Refused(&'static str);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Registers the default namespace.
pub async fn register(
    state: AppState,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), socketioxide_redis::InitError<ResilientDriver>> {
    let verifier = state.config.verifier.clone();
    let (rate, burst) = (
        state.config.socket_events_per_sec,
        state.config.socket_event_burst,
    );
    let dispatch = Dispatch::new(state.clone());
    // One shared copy for the per-socket handlers: a socket's closures hold
    // a pointer to it, not a clone of every connector handle.
    let shared = Arc::new(state.clone());
    let for_auth = shared.clone();
    let auth = move |socket: SocketRef<Adapter>, TryData(payload): TryData<Value>| {
        let verifier: TokenVerifier = verifier.clone();
        let state = for_auth.clone();
        let dispatch = dispatch.clone();
        async move {
            let policy = &state.config.handshake;
            let parts = socket.req_parts();
            let origin = parts
                .headers
                .get(axum::http::header::ORIGIN)
                .map(|v| v.to_str().unwrap_or("?"));
            if !policy.origin_allowed(origin) {
                metrics::counter!("chat_socket_handshakes_refused_total", "reason" => "origin")
                    .increment(1);
                return Err(Refused("origin not allowed"));
            }
            let token = policy
                .token(payload.ok().as_ref(), parts.uri.query())
                .ok_or(Refused(policy.missing_token()))?;
            let claims = verifier.verify(&token).map_err(|e| match e {
                parley_common::token::TokenError::Expired => Refused("token expired"),
                parley_common::token::TokenError::WrongScope => {
                    Refused("token not meant for this service")
                }
                _ => Refused("invalid token"),
            })?;
            // No leeway for sockets: one would be closed again at once.
            if claims.exp <= chrono::Utc::now().timestamp() {
                return Err(Refused("token expired"));
            }
            state
                .revocations
                .check(&claims)
                .await
                .map_err(|e| match e {
                    RevocationError::Revoked => Refused("token revoked"),
                    RevocationError::Unavailable(_) => Refused("service unavailable, try again"),
                })?;
            let id = ObjectId::parse_str(&claims.sub).map_err(|_| Refused("invalid token"))?;
            let user = SocketUser(Arc::new(SocketState::new(id, claims, rate, burst)));
            prepare(&state, &socket, &user, dispatch);
            socket.extensions.insert(user);
            Ok::<(), Refused>(())
        }
    };
    let on_connect = {
        let state = shared.clone();
        move |socket: SocketRef<Adapter>| {
            let state = state.clone();
            async move { connected(&state, socket).await }
        }
    };
    state.fanout.io().ns("/", on_connect.with(auth)).await?;
    // Only now is this pod's own subscription in place.
    state.fanout.watch_peers(shutdown);
    Ok(())
}

/// Joins the user's room and registers the event handlers. Runs inside the
/// handshake check, before the client is told it is connected: socketioxide
/// spawns the connect handler only after that, so a client emitting at once
/// would otherwise race the registrations and lose its first event.
///
/// One shared handler serves every event (registered as the fallback, so
/// the socket holds one boxed pointer instead of a map of closures).
fn prepare(
    state: &Arc<AppState>,
    socket: &SocketRef<Adapter>,
    user: &SocketUser,
    dispatch: Dispatch,
) {
    socket.join(user_room(&user.0.id));
    socket.on_fallback(dispatch);
    let on_disconnect = {
        let state = state.clone();
        move |socket: SocketRef<Adapter>| {
            let state = state.clone();
            async move { disconnected(&state, socket).await }
        }
    };
    socket.on_disconnect(on_disconnect);
}

/// After the handshake: presence, and the online list for this socket.
///
/// socketioxide runs this in a task of its own, so the socket may already
/// be gone (and its disconnect handled) by now: the lifecycle decides.
async fn connected(state: &AppState, socket: SocketRef<Adapter>) {
    let Some(SocketUser(user)) = socket_user(&socket) else {
        let _ = socket.disconnect();
        return;
    };
    let id = user.id;
    let partners = match state.store.partners_of(&id).await {
        Ok(p) => p,
        Err(error) => {
            tracing::warn!(%error, "chat partners unavailable at connect");
            Vec::new()
        }
    };
    {
        let mut step = user.lifecycle.lock().await;
        let (next, action) = lifecycle::on_connect(*step, socket.connected());
        *step = next;
        if action != Action::Register {
            return;
        }
        metrics::gauge!("chat_sockets_connected").increment(1.0);
        match state.presence.connected(&id, socket.id.as_str()).await {
            Ok(Transition::CameOnline) => {
                drop(step);
                state.fanout.presence_changed(&id, &partners, true).await;
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "presence unavailable at connect"),
        }
    }
    state.fanout.send_online_list(&id, &partners).await;
}

async fn disconnected(state: &AppState, socket: SocketRef<Adapter>) {
    let Some(SocketUser(user)) = socket_user(&socket) else {
        return;
    };
    let id = user.id;
    let transition = {
        let mut step = user.lifecycle.lock().await;
        let (next, action) = lifecycle::on_disconnect(*step);
        *step = next;
        if action != Action::Unregister {
            return;
        }
        metrics::gauge!("chat_sockets_connected").decrement(1.0);
        state.presence.disconnected(&id, socket.id.as_str()).await
    };
    match transition {
        Ok(Transition::WentOffline) => {
            if let Err(error) = state
                .store
                .set_last_seen(&id, mongodb::bson::DateTime::now())
                .await
            {
                tracing::warn!(%error, "lastSeenAt not stored");
            }
            match state.store.partners_of(&id).await {
                Ok(partners) => state.fanout.presence_changed(&id, &partners, false).await,
                Err(error) => tracing::warn!(%error, "presence fan-out skipped"),
            }
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "presence unavailable at disconnect"),
    }
}
