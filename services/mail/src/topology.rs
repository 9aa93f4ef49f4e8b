//! Queue names and the delay and dead-letter queues around each work queue.
//!
//! A mail that failed transiently waits in `<queue>.retry.<n>`, whose TTL
//! dead-letters it back to `<queue>`; one that cannot be sent is parked in
//! `<queue>.dead` with the reason in its headers, for a bounded time and
//! number (a parked mail names its recipient). Notifications first wait
//! out the grace period in `mail.notifications.grace`, which dead-letters
//! them to `mail.notifications.due`.

use std::time::Duration;

use lapin::Channel;
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use parley_common::amqp::{Amqp, PublishError};

use crate::config::Parking;

/// Login codes.
pub const OTP: &str = "mail.otp";
/// Incoming message events.
pub const NOTIFICATIONS: &str = "mail.notifications";
/// Message events waiting out the grace period.
pub const GRACE: &str = "mail.notifications.grace";
/// Message events whose grace period is over.
pub const DUE: &str = "mail.notifications.due";

/// The delay queue for retry level `level` of `queue`.
pub fn retry_queue(queue: &str, level: usize) -> String {
    format!("{queue}.retry.{}", level + 1)
}

/// The parking queue of `queue`.
pub fn dead_queue(queue: &str) -> String {
    format!("{queue}.dead")
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// Arguments of a queue that holds messages for `ttl`, then sends them to `target`.
pub fn delay_arguments(ttl: Duration, target: &str) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-message-ttl"),
        AMQPValue::LongUInt(millis(ttl)),
    );
    args.insert(
        ShortString::from("x-dead-letter-exchange"),
        AMQPValue::LongString(LongString::from("")),
    );
    args.insert(
        ShortString::from("x-dead-letter-routing-key"),
        AMQPValue::LongString(LongString::from(target)),
    );
    args
}

/// Arguments of a parking queue: messages expire after `ttl`, and beyond
/// `max_length` the oldest are dropped.
pub fn park_arguments(parking: Parking) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-message-ttl"),
        AMQPValue::LongUInt(millis(parking.ttl)),
    );
    args.insert(
        ShortString::from("x-max-length"),
        AMQPValue::LongUInt(parking.max_length),
    );
    args.insert(
        ShortString::from("x-overflow"),
        AMQPValue::LongString(LongString::from("drop-head")),
    );
    args
}

async fn declare(channel: &Channel, name: &str, args: FieldTable) -> Result<(), lapin::Error> {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .map(drop)
}

/// Declares the retry queues of `queue` (idempotent while the delays stay
/// the same).
pub async fn declare_retries(
    channel: &Channel,
    queue: &str,
    delays: &[Duration],
) -> Result<(), lapin::Error> {
    for (level, delay) in delays.iter().enumerate() {
        declare(
            channel,
            &retry_queue(queue, level),
            delay_arguments(*delay, queue),
        )
        .await?;
    }
    Ok(())
}

/// What declaring a parking queue came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parked {
    /// Declared with the configured bounds.
    Bounded,
    /// An older declaration with other arguments holds `messages` mails; it
    /// is kept as it is until it is drained (the broker refuses to change a
    /// queue's arguments).
    Legacy {
        /// Mails in the old queue.
        messages: u32,
    },
}

/// Declares `queue`'s parking queue with `parking`'s bounds. A queue left
/// by an earlier version (or other bounds) is replaced when it is empty;
/// otherwise it is kept and reported, because deleting it would lose mail.
/// Each attempt uses its own channel: the broker closes a channel on a
/// declaration with other arguments.
pub async fn declare_parking(
    amqp: &Amqp,
    queue: &str,
    parking: Parking,
) -> Result<Parked, PublishError> {
    let name = dead_queue(queue);
    let bounded = |channel: Channel| {
        let name = name.clone();
        async move {
            let declared = declare(&channel, &name, park_arguments(parking))
                .await
                .is_ok();
            if declared {
                let _ = channel.close(200, "declared".into()).await;
            }
            declared
        }
    };
    if bounded(amqp.channel().await?).await {
        return Ok(Parked::Bounded);
    }
    // Another declaration: replace it when it holds nothing.
    let channel = amqp.channel().await?;
    let _ = channel
        .queue_delete(
            name.as_str().into(),
            QueueDeleteOptions {
                if_empty: true,
                ..Default::default()
            },
        )
        .await;
    if bounded(amqp.channel().await?).await {
        return Ok(Parked::Bounded);
    }
    let channel = amqp.channel().await?;
    let existing = channel
        .queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let _ = channel.close(200, "inspected".into()).await;
    Ok(Parked::Legacy {
        messages: existing.message_count(),
    })
}

/// Declares the grace queue feeding the due queue.
pub async fn declare_grace(channel: &Channel, grace: Duration) -> Result<(), lapin::Error> {
    declare(
        channel,
        GRACE,
        delay_arguments(grace.max(Duration::from_millis(1)), DUE),
    )
    .await?;
    declare(channel, DUE, FieldTable::default()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(retry_queue(OTP, 0), "mail.otp.retry.1");
        assert_eq!(dead_queue(DUE), "mail.notifications.due.dead");
        let args = delay_arguments(Duration::from_secs(5), OTP);
        assert_eq!(
            args.inner().get(&ShortString::from("x-message-ttl")),
            Some(&AMQPValue::LongUInt(5000))
        );
    }

    #[test]
    fn parking_is_bounded() {
        let args = park_arguments(Parking {
            ttl: Duration::from_secs(60),
            max_length: 7,
        });
        let get = |key: &str| args.inner().get(&ShortString::from(key)).cloned();
        assert_eq!(get("x-message-ttl"), Some(AMQPValue::LongUInt(60_000)));
        assert_eq!(get("x-max-length"), Some(AMQPValue::LongUInt(7)));
        assert_eq!(
            get("x-overflow"),
            Some(AMQPValue::LongString(LongString::from("drop-head")))
        );
    }
}
