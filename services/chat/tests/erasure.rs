//! A deleted account's erasure against the real MongoDB-protocol server,
//! at the store: a message changed meanwhile under a later change number
//! is never given a lower one (a client whose change-feed cursor is past
//! it would miss the tombstone); the next round, numbered above it,
//! erases it.

mod support;

use mongodb::bson::{Document, doc, oid::ObjectId};
use parley_chat::store::{Appended, NewMessage, Store};
use support::Stack;

async fn append(
    store: &Store,
    chat: ObjectId,
    sender: ObjectId,
    text: &str,
) -> anyhow::Result<ObjectId> {
    let appended = store
        .append_message(NewMessage {
            chat_id: chat,
            sender,
            text: text.to_owned(),
            image: None,
            client_message_id: None,
            preview: text.to_owned(),
            reply_to: None,
        })
        .await?;
    match appended {
        Appended::Created(message, _) => Ok(message.id),
        other => anyhow::bail!("not stored: {other:?}"),
    }
}

#[tokio::test]
async fn an_erasure_never_lowers_a_change_number_and_a_later_round_finishes() -> anyhow::Result<()>
{
    let stack = Stack::new().await?;
    let store = Store::new(&stack.db);
    let (gone, other) = (stack.user("gone").await?, stack.user("other").await?);
    let (chat, _) = store.find_or_create_pair(&gone.id, &other.id).await?;
    let early = append(&store, chat.id, gone.id, "early").await?;
    let raced = append(&store, chat.id, gone.id, "raced").await?;
    assert!(store.has_words_of(&chat.id, &gone.id).await?);

    // The erasure takes its number; a reaction takes the next one and is
    // written first.
    let erasure = store
        .next_change(&chat.id, None)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no chat"))?;
    let reaction = store
        .next_change(&chat.id, Some(&other.id))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no chat"))?;
    assert!(reaction > erasure);
    let messages = stack.db.collection::<Document>("messages");
    messages
        .update_one(doc! {"_id": raced}, doc! {"$set": {"changeSeq": reaction}})
        .await?;

    assert_eq!(store.erase_author(&chat.id, &gone.id, erasure).await?, 1);
    let seq_of = |id: ObjectId| {
        let messages = messages.clone();
        async move {
            let found = messages.find_one(doc! {"_id": id}).await?;
            let found = found.ok_or_else(|| anyhow::anyhow!("message gone"))?;
            anyhow::Ok((
                found.get_i64("changeSeq")?,
                found.get_str("text")?.to_owned(),
            ))
        }
    };
    assert_eq!(seq_of(early).await?, (erasure, String::new()));
    assert_eq!(
        seq_of(raced).await?,
        (reaction, "raced".to_owned()),
        "not lowered below the reaction's number"
    );
    assert!(
        store.has_words_of(&chat.id, &gone.id).await?,
        "the next round is due"
    );

    let next = store
        .next_change(&chat.id, None)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no chat"))?;
    assert_eq!(store.erase_author(&chat.id, &gone.id, next).await?, 1);
    assert_eq!(seq_of(raced).await?, (next, String::new()));
    assert!(next > reaction);
    assert!(!store.has_words_of(&chat.id, &gone.id).await?);
    Ok(())
}
