//! Queue names and the delay and dead-letter queues around each work queue.
//!
//! A mail that failed transiently waits in `<queue>.retry.<n>`, whose TTL
//! dead-letters it back to `<queue>`; one that cannot be sent is parked in
//! `<queue>.dead` with the reason in its headers. Notifications first wait
//! out the grace period in `mail.notifications.grace`, which dead-letters
//! them to `mail.notifications.due`.

use std::time::Duration;

use lapin::Channel;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

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

/// Declares the retry and dead queues of `queue` (idempotent while the
/// delays stay the same).
pub async fn declare_around(
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
    declare(channel, &dead_queue(queue), FieldTable::default()).await
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
}
