//! Socket.IO: authenticated sockets, rooms, typing, sends, receipts, presence.
//!
//! - [`connect`]: the handshake check (a token from an allowed origin, see
//!   [`crate::handshake`]; the user id always comes from the token), the
//!   user's room, and presence on connect and disconnect.
//! - [`events`]: the client events. One shared handler ([`events::Dispatch`])
//!   runs on the socket's read loop: it checks the payload, the per-socket
//!   rate, and admission (a per-socket and a per-pod bound on events in
//!   flight) before any task is spawned, so excess work is refused at once
//!   and counted, never queued. Errors reach the client with stable codes
//!   ([`crate::error::ChatError::code`]).
//! - [`socket`]: what a socket carries: ephemeral events (typing, receipts,
//!   repeated joins) are authorised from the chats it passed one membership
//!   check for.
//! - [`invalidation`] and [`session`]: blocks, group membership changes and logouts reach live sockets on
//!   every replica.
//!
//! Emits go through [`crate::fanout`].

pub mod admission;
pub mod connect;
pub mod events;
pub mod invalidation;
pub mod lifecycle;
pub mod rate;
pub mod request_head;
pub mod session;
pub mod socket;

use socketioxide::SocketIo;
use socketioxide_redis::{RedisAdapterConfig, RedisAdapterCtr};

use crate::fanout::Adapter;
use crate::fanout::redis_driver::{DriverError, ResilientDriver};

pub use connect::register;

/// Largest Socket.IO packet accepted (bigger ones close that socket only).
pub const MAX_PACKET_BYTES: usize = 64 * 1024;

/// Packets waiting to be written to one client before emits to it fail
/// (counted as dropped relays). socketioxide's default is 128; the queue's
/// memory is only taken while a client lags, so a larger bound rides out a
/// short stall of a busy client instead of dropping its events.
pub const SOCKET_BUFFER_PACKETS: usize = 256;

/// Adapter messages from other pods waiting to be handled before the driver
/// drops them (counted in `socketio_adapter_dropped_total`); the adapter's
/// default is 1,024, a fifth of a second of 5k/s.
pub const ADAPTER_STREAM_BUFFER: usize = 8192;

/// Websocket read buffer per socket (socketioxide's default is 4 KiB;
/// larger frames are read in several steps).
pub const WS_READ_BUFFER_BYTES: usize = 1024;

/// Builds the Socket.IO service and handle over the configured Redis.
///
/// One service (one engine) for the whole router: applying the layer to an
/// axum `Router` would give each route its own engine, and polling sessions
/// would not be found from one request to the next.
pub fn build(
    redis: &parley_common::redis::RedisConfig,
    channel_prefix: String,
    connect_timeout: std::time::Duration,
) -> Result<(axum::Router, SocketIo<Adapter>), DriverError> {
    let driver = ResilientDriver::new(redis)?;
    let ctr = RedisAdapterCtr::new_with_driver(
        driver,
        RedisAdapterConfig::new()
            .with_prefix(channel_prefix)
            .with_stream_buffer(ADAPTER_STREAM_BUFFER),
    );
    let (service, io) = SocketIo::builder()
        .max_payload(MAX_PACKET_BYTES as u64)
        .ws_max_message_size(MAX_PACKET_BYTES)
        .ws_max_frame_size(MAX_PACKET_BYTES)
        .ws_read_buffer_size(WS_READ_BUFFER_BYTES)
        .max_buffer_size(SOCKET_BUFFER_PACKETS)
        .connect_timeout(connect_timeout)
        .with_adapter::<Adapter>(ctr)
        .build_svc();
    let routes = axum::Router::new()
        .route_service("/socket.io/", service)
        .layer(axum::middleware::map_request(request_head::owned_head));
    Ok((routes, io))
}
