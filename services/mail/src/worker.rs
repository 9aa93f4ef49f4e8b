//! Turning deliveries into mail: dedupe, send, then ack; retry or park on failure.

use std::time::Instant;

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncTransport, Message};
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Document, doc};
use parley_common::amqp::Amqp;
use parley_common::events::{Envelope, EnvelopeHeader, Event, MessageCreated, OtpRequested};
use parley_common::redis::Redis;
use parley_common::storage::{UserContactView, collections, presence_count_key};
use redis::AsyncCommands;

use crate::audience::{self, ChatView, MessageView};
use crate::config::Delivery as Policy;
use crate::policy::{self, Failure, Next};
use crate::smtp::Transport;
use crate::templates::{self, Rendered};
use crate::topology;

/// How long a sent marker is kept (redeliveries come much sooner).
const SENT_TTL_SECS: u64 = 7 * 24 * 3600;
/// How long a failed mail waits for the retry and parking queues.
const TOPOLOGY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long one worker may hold an event before another may try it.
const CLAIM_TTL_SECS: u64 = 120;

/// Why a delivery did not become a mail.
#[derive(Debug)]
pub struct Problem {
    /// Retry or park.
    pub failure: Failure,
    /// Said in logs and in the parked message's headers.
    pub reason: String,
}

impl Problem {
    fn transient(reason: impl Into<String>) -> Self {
        Self {
            failure: Failure::Transient,
            reason: reason.into(),
        }
    }

    fn permanent(reason: impl Into<String>) -> Self {
        Self {
            failure: Failure::Permanent,
            reason: reason.into(),
        }
    }
}

/// Everything a worker needs; cheap to clone.
#[derive(Clone)]
pub struct Worker {
    /// Broker (retries and parking).
    pub amqp: Amqp,
    /// True once the retry and parking queues were declared: a failed mail
    /// waits for them rather than landing in a queue without its bounds.
    pub topology: tokio::sync::watch::Receiver<bool>,
    /// Dedupe markers, presence, notification windows.
    pub redis: Redis,
    /// Users, chats and messages.
    pub db: mongodb::Database,
    /// SMTP pool.
    pub smtp: Transport,
    /// Sender.
    pub from: Mailbox,
    /// Policy.
    pub policy: Policy,
}

fn attempt_of(delivery: &Delivery) -> u32 {
    delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| {
            h.inner()
                .get(&ShortString::from("x-parley-attempt"))
                .cloned()
        })
        .and_then(|v| match v {
            AMQPValue::LongUInt(n) => Some(n),
            AMQPValue::LongLongInt(n) => u32::try_from(n).ok(),
            AMQPValue::LongInt(n) => u32::try_from(n).ok(),
            _ => None,
        })
        .unwrap_or(1)
}

/// What is kept of a mail that is parked: a login code is useless once it
/// could not be sent and must not sit in a queue, so the OTP queue keeps the
/// envelope without `data.code`, and nothing of a body it cannot read.
fn parked_body(queue: &str, data: &[u8]) -> Vec<u8> {
    if queue != topology::OTP {
        return data.to_vec();
    }
    let Ok(mut event) = serde_json::from_slice::<serde_json::Value>(data) else {
        return Vec::new();
    };
    match event.get_mut("data").and_then(|d| d.as_object_mut()) {
        Some(fields) => {
            fields.remove("code");
        }
        None => return Vec::new(),
    }
    serde_json::to_vec(&event).unwrap_or_default()
}

impl Worker {
    fn key(&self, suffix: &str) -> String {
        self.redis.key(&format!("mail:{suffix}"))
    }

    /// Handles one delivery from `queue` to the end: ack only after the SMTP
    /// server accepted the mail (or it was a duplicate), else retry or park.
    pub async fn handle(&self, queue: &'static str, delivery: Delivery) {
        let attempt = attempt_of(&delivery);
        let outcome = match queue {
            topology::OTP => self.otp(&delivery.data).await,
            topology::NOTIFICATIONS => self.hold_for_grace(&delivery).await,
            _ => self.notify(&delivery.data).await,
        };
        let settled = match outcome {
            Ok(()) => true,
            Err(problem) => self.after_failure(queue, &delivery, attempt, problem).await,
        };
        let result = if settled {
            delivery.ack(BasicAckOptions::default()).await
        } else {
            // Could not even re-queue it elsewhere: let the broker redeliver.
            delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
        };
        if let Err(error) = result {
            tracing::warn!(%error, queue, "ack/nack failed; the broker will redeliver");
        }
    }

    async fn after_failure(
        &self,
        queue: &str,
        delivery: &Delivery,
        attempt: u32,
        problem: Problem,
    ) -> bool {
        let mut topology = self.topology.clone();
        let declared = tokio::time::timeout(TOPOLOGY_WAIT, topology.wait_for(|done| *done))
            .await
            .is_ok_and(|seen| seen.is_ok());
        if !declared {
            tracing::warn!(
                queue,
                "mail queues not declared yet; the broker will redeliver"
            );
            return false;
        }
        let next = policy::after_failure(
            problem.failure,
            attempt,
            self.policy.max_attempts,
            &self.policy.retry_delays,
        );
        let parking = matches!(next, Next::Park);
        let (target, headers, counter) = match next {
            Next::Retry {
                attempt: next_attempt,
                level,
                delay,
            } => {
                tracing::warn!(queue, attempt, reason = %problem.reason, delay_ms = delay.as_millis() as u64, "mail failed; will retry");
                let mut headers = FieldTable::default();
                headers.insert("x-parley-attempt".into(), AMQPValue::LongUInt(next_attempt));
                (
                    topology::retry_queue(queue, level),
                    headers,
                    "mail_retried_total",
                )
            }
            Next::Park => {
                tracing::error!(queue, attempt, reason = %problem.reason, "mail parked");
                let mut headers = FieldTable::default();
                headers.insert("x-parley-attempt".into(), AMQPValue::LongUInt(attempt));
                headers.insert(
                    "x-parley-reason".into(),
                    AMQPValue::LongString(LongString::from(problem.reason.as_str())),
                );
                (topology::dead_queue(queue), headers, "mail_parked_total")
            }
        };
        let body = if parking {
            parked_body(queue, &delivery.data)
        } else {
            delivery.data.clone()
        };
        let properties = delivery
            .properties
            .clone()
            .with_headers(headers)
            .with_delivery_mode(2);
        match self.amqp.publish_with("", &target, properties, &body).await {
            Ok(()) => {
                // Counted once the broker has confirmed the move.
                metrics::counter!(counter, "queue" => queue.to_owned()).increment(1);
                true
            }
            Err(error) => {
                tracing::warn!(%error, target, "could not move the mail; leaving it on its queue");
                false
            }
        }
    }

    async fn send(&self, to: &str, mail: Rendered) -> Result<(), Problem> {
        let to: Mailbox = to
            .parse()
            .map_err(|e| Problem::permanent(format!("bad recipient address: {e}")))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject)
            .multipart(MultiPart::alternative_plain_html(mail.text, mail.html))
            .map_err(|e| Problem::permanent(format!("cannot build the mail: {e}")))?;
        let started = Instant::now();
        let result = self.smtp.send(message).await;
        metrics::histogram!("smtp_send_seconds").record(started.elapsed().as_secs_f64());
        result.map(drop).map_err(|e| Problem {
            failure: policy::classify(&e),
            reason: format!("smtp: {e}"),
        })
    }

    /// Sends `mail` once per `id`: a sent marker makes redeliveries no-ops,
    /// a claim keeps two workers from sending the same event at once.
    async fn send_once(
        &self,
        id: &str,
        to: &str,
        mail: Rendered,
        kind: &'static str,
    ) -> Result<(), Problem> {
        let mut conn = self.redis.conn();
        let redis_down = |e: redis::RedisError| Problem::transient(format!("redis: {e}"));
        let sent_key = self.key(&format!("sent:{id}"));
        let already: Option<String> = conn.get(&sent_key).await.map_err(redis_down)?;
        if already.is_some() {
            metrics::counter!("mail_duplicates_skipped_total").increment(1);
            return Ok(());
        }
        let claim_key = self.key(&format!("claim:{id}"));
        let claimed: Option<String> = redis::cmd("SET")
            .arg(&claim_key)
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(CLAIM_TTL_SECS)
            .query_async(&mut conn)
            .await
            .map_err(redis_down)?;
        if claimed.is_none() {
            return Err(Problem::transient("another worker is sending this mail"));
        }
        match self.send(to, mail).await {
            Ok(()) => {
                metrics::counter!("mail_sent_total", "kind" => kind).increment(1);
                let marked: redis::RedisResult<()> = conn.set_ex(&sent_key, 1, SENT_TTL_SECS).await;
                if let Err(error) = marked {
                    tracing::warn!(%error, id, "sent marker not stored; a redelivery could mail twice");
                }
                Ok(())
            }
            Err(problem) => {
                let _: redis::RedisResult<()> = conn.del(&claim_key).await;
                Err(problem)
            }
        }
    }

    async fn otp(&self, data: &[u8]) -> Result<(), Problem> {
        let header: EnvelopeHeader = serde_json::from_slice(data)
            .map_err(|e| Problem::permanent(format!("unreadable event: {e}")))?;
        if header.kind != OtpRequested::TYPE {
            return Err(Problem::permanent(format!(
                "unexpected event type {:?}",
                header.kind
            )));
        }
        let event: Envelope<OtpRequested> = serde_json::from_slice(data)
            .map_err(|e| Problem::permanent(format!("bad {}: {e}", OtpRequested::TYPE)))?;
        if event.data.expires_at < chrono::Utc::now() {
            return Err(Problem::permanent(
                "the code expired before it could be mailed",
            ));
        }
        let mail = templates::login_code(&event.data.code, event.data.expires_at);
        self.send_once(&event.id.to_string(), &event.data.email, mail, "otp")
            .await
    }

    /// New message events wait out the grace period before anyone is notified.
    async fn hold_for_grace(&self, delivery: &Delivery) -> Result<(), Problem> {
        let header: EnvelopeHeader = serde_json::from_slice(&delivery.data)
            .map_err(|e| Problem::permanent(format!("unreadable event: {e}")))?;
        if header.kind != MessageCreated::TYPE {
            return Err(Problem::permanent(format!(
                "unexpected event type {:?}",
                header.kind
            )));
        }
        self.amqp
            .publish_with(
                "",
                topology::GRACE,
                delivery.properties.clone(),
                &delivery.data,
            )
            .await
            .map_err(|e| Problem::transient(format!("cannot hold for grace: {e}")))
    }

    /// After the grace period: one summary mail per offline recipient who is
    /// still a member, has not muted the chat and has not seen the message,
    /// at most one per chat per window. The chat is read now, not taken
    /// from the event: a mute, removal or rename since the send counts.
    async fn notify(&self, data: &[u8]) -> Result<(), Problem> {
        let event: Envelope<MessageCreated> = serde_json::from_slice(data)
            .map_err(|e| Problem::permanent(format!("bad {}: {e}", MessageCreated::TYPE)))?;
        let message_id = ObjectId::parse_str(&event.data.message_id)
            .map_err(|_| Problem::permanent("messageId is not an id"))?;
        let chat_id = ObjectId::parse_str(&event.data.chat_id)
            .map_err(|_| Problem::permanent("chatId is not an id"))?;
        let mongo_down = |e: mongodb::error::Error| Problem::transient(format!("mongodb: {e}"));
        let redis_down = |e: redis::RedisError| Problem::transient(format!("redis: {e}"));
        let chats = self.db.collection::<Document>(collections::CHATS);
        let messages = self.db.collection::<Document>(collections::MESSAGES);
        let users = self.db.collection::<UserContactView>(collections::USERS);
        let Some(chat) = chats
            .find_one(doc! {"_id": chat_id})
            .projection(ChatView::projection())
            .await
            .map_err(mongo_down)?
            .map(|chat| ChatView::from_document(&chat))
        else {
            // The chat is gone: nothing left to read.
            return Ok(());
        };
        let message = messages
            .find_one(doc! {"_id": message_id})
            .projection(MessageView::projection())
            .await
            .map_err(mongo_down)?
            .map(|message| MessageView::from_document(&message))
            .unwrap_or_default();
        let mut conn = self.redis.conn();
        for recipient in &event.data.recipient_ids {
            let Ok(recipient_id) = ObjectId::parse_str(recipient) else {
                continue;
            };
            if !audience::should_notify(&chat, &recipient_id, &message) {
                continue;
            }
            let online: Option<i64> = conn
                .get(self.redis.key(&presence_count_key(recipient)))
                .await
                .map_err(redis_down)?;
            if online.unwrap_or(0) > 0 {
                continue;
            }
            let id = format!("{}:{recipient}", event.id);
            let window_key = self.key(&format!("notified:{chat_id}:{recipient}"));
            let already: Option<String> = conn
                .get(self.key(&format!("sent:{id}")))
                .await
                .map_err(redis_down)?;
            if already.is_some() {
                continue;
            }
            let opened: Option<String> = redis::cmd("SET")
                .arg(&window_key)
                .arg(&id)
                .arg("NX")
                .arg("EX")
                .arg(self.policy.notify_window.as_secs().max(1))
                .query_async(&mut conn)
                .await
                .map_err(redis_down)?;
            if opened.is_none() {
                // Someone was notified about this chat within the window.
                continue;
            }
            let unseen = messages
                .count_documents(audience::unseen_filter(&chat, chat_id, recipient_id))
                .await
                .map_err(mongo_down)?;
            let Some(email) = users
                .find_one(doc! {"_id": recipient_id})
                .projection(doc! {"email": 1})
                .await
                .map_err(mongo_down)?
                .and_then(|u| u.email)
            else {
                continue;
            };
            let link = self
                .policy
                .app_base_url
                .join(&format!("chat/{chat_id}"))
                .map(|u| u.to_string())
                .unwrap_or_else(|_| self.policy.app_base_url.to_string());
            // The sender's name and the preview stay out: see the template.
            let mail = match &chat.group {
                Some(group) => templates::new_group_messages(
                    unseen.max(1),
                    group.name_for(&recipient_id),
                    &link,
                ),
                None => templates::new_messages(unseen.max(1), &link),
            };
            if let Err(problem) = self.send_once(&id, &email, mail, "notification").await {
                let _: redis::RedisResult<()> = conn.del(&window_key).await;
                return Err(problem);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parked_codes_are_dropped() {
        let event = serde_json::json!({
            "id": "0b4a1f52-8f3a-4a0e-9c55-0f6f2b7c1d11",
            "type": OtpRequested::TYPE,
            "data": {"email": "a@example.com", "code": "123456", "expiresAt": "2026-01-01T00:00:00Z"}
        });
        let bytes = serde_json::to_vec(&event).unwrap_or_default();
        let parked = parked_body(topology::OTP, &bytes);
        let text = String::from_utf8_lossy(&parked);
        assert!(!text.contains("123456"), "{text}");
        assert!(text.contains("a@example.com"), "{text}");
        assert!(parked_body(topology::OTP, b"{not json 123456").is_empty());
        assert!(parked_body(topology::OTP, b"[\"123456\"]").is_empty());
        assert_eq!(parked_body(topology::DUE, &bytes), bytes);
    }
}
