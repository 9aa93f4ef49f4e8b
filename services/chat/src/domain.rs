//! Pure rules of chats and messages: ids, validation, pagination, previews.

use crate::error::ChatError;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mongodb::bson::DateTime;
use mongodb::bson::oid::ObjectId;

/// Longest message text, in characters.
pub const MAX_TEXT_CHARS: usize = 4000;
/// Longest client message id.
pub const MAX_CLIENT_ID_LEN: usize = 64;
/// Default and largest page sizes.
pub const DEFAULT_PAGE: i64 = 50;
/// The largest page a client may ask for.
pub const MAX_PAGE: i64 = 100;
/// Characters of text in a notification preview.
pub const PREVIEW_CHARS: usize = 120;

/// Parses a hex ObjectId, naming the field in the 400 answer.
pub fn parse_id(field: &str, raw: &str) -> Result<ObjectId, ChatError> {
    ObjectId::parse_str(raw.trim())
        .map_err(|_| ChatError::invalid(format!("{field} is not a valid id")))
}

/// The unique key of the 1:1 chat between two users (order-independent).
pub fn pair_key(a: &ObjectId, b: &ObjectId) -> String {
    let (x, y) = if a.to_hex() <= b.to_hex() {
        (a, b)
    } else {
        (b, a)
    };
    format!("{}:{}", x.to_hex(), y.to_hex())
}

/// The file name a stored image is served under: its id and the extension
/// of its (sniffed) type, nothing a client chose.
pub fn media_file_name(id: &ObjectId, content_type: &str) -> String {
    let extension = match content_type {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        "image/webp" => "webp",
        _ => "bin",
    };
    format!("{}.{extension}", id.to_hex())
}

/// How an image of `length` bytes lies in GridFS chunks: every chunk
/// holds `chunk_size` bytes but the last, numbered 0, 1, 2… in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkPlan {
    /// The file's length.
    pub length: u64,
    /// Bytes per full chunk.
    pub chunk_size: u64,
    /// How many chunks the file has.
    pub chunks: u64,
}

impl ChunkPlan {
    /// The plan of a file document's `length` and `chunkSize`.
    pub fn new(length: u64, chunk_size: u32) -> Self {
        let chunk_size = u64::from(chunk_size.max(1));
        Self {
            length,
            chunk_size,
            chunks: length.div_ceil(chunk_size),
        }
    }

    /// The bytes chunk `n` must hold.
    pub fn expected_len(&self, n: u64) -> u64 {
        if n + 1 == self.chunks {
            self.length - n * self.chunk_size
        } else {
            self.chunk_size
        }
    }

    /// Checks that the `n`th chunk read, numbered `found_n` and holding
    /// `found_len` bytes, is the one expected there.
    pub fn check(&self, n: u64, found_n: i64, found_len: usize) -> Result<(), String> {
        if u64::try_from(found_n).ok() != Some(n) {
            return Err(format!("media chunk {n} is missing (found {found_n})"));
        }
        let expected = self.expected_len(n);
        if found_len as u64 != expected {
            return Err(format!(
                "media chunk {n} holds {found_len} bytes, expected {expected}"
            ));
        }
        Ok(())
    }
}

/// Trims message text and checks its length (1 to [`MAX_TEXT_CHARS`] characters).
pub fn validate_text(text: &str) -> Result<String, ChatError> {
    let trimmed = text.trim();
    let chars = trimmed.chars().count();
    if chars == 0 {
        return Err(ChatError::invalid("text must not be empty"));
    }
    if chars > MAX_TEXT_CHARS {
        return Err(ChatError::invalid(format!(
            "text is longer than {MAX_TEXT_CHARS} characters"
        )));
    }
    Ok(trimmed.to_owned())
}

/// Text that may be empty (an image caption).
pub fn validate_caption(text: Option<&str>) -> Result<String, ChatError> {
    match text.map(str::trim) {
        None | Some("") => Ok(String::new()),
        Some(t) => validate_text(t),
    }
}

/// Checks a client-chosen idempotency key: 1 to 64 visible ASCII characters.
pub fn validate_client_id(id: Option<&str>) -> Result<Option<String>, ChatError> {
    match id {
        None => Ok(None),
        Some(id)
            if !id.is_empty()
                && id.len() <= MAX_CLIENT_ID_LEN
                && id.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(id.to_owned()))
        }
        Some(_) => Err(ChatError::invalid(format!(
            "clientMessageId must be 1 to {MAX_CLIENT_ID_LEN} visible ASCII characters"
        ))),
    }
}

/// Clamps a requested page size to 1..=[`MAX_PAGE`], default [`DEFAULT_PAGE`].
pub fn page_size(requested: Option<i64>) -> Result<i64, ChatError> {
    match requested {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(ChatError::invalid(format!(
            "limit must be between 1 and {MAX_PAGE}"
        ))),
    }
}

/// Which slice of a chat's history a client asks for (by message `seq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The newest `limit` messages.
    Latest,
    /// Messages older than this seq (scrolling back).
    Before(i64),
    /// Messages newer than this seq (catching up after a reconnect), oldest first.
    After(i64),
}

/// Picks the window from the `before`/`after` query parameters.
pub fn window(before: Option<i64>, after: Option<i64>) -> Result<Window, ChatError> {
    match (before, after) {
        (Some(_), Some(_)) => Err(ChatError::invalid("use either before or after, not both")),
        (Some(b), None) if b >= 0 => Ok(Window::Before(b)),
        (None, Some(a)) if a >= 0 => Ok(Window::After(a)),
        (None, None) => Ok(Window::Latest),
        _ => Err(ChatError::invalid("before and after must be non-negative")),
    }
}

/// Pure: encodes a chat-list cursor (the last chat's activity time and id).
pub fn encode_cursor(at: DateTime, id: &ObjectId) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}", at.timestamp_millis(), id.to_hex()))
}

/// Pure: decodes a chat-list cursor.
pub fn decode_cursor(raw: &str) -> Result<(DateTime, ObjectId), ChatError> {
    let bad = || ChatError::invalid("cursor is not valid");
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (millis, id) = text.split_once(':').ok_or_else(bad)?;
    let millis: i64 = millis.parse().map_err(|_| bad())?;
    let id = ObjectId::parse_str(id).map_err(|_| bad())?;
    Ok((DateTime::from_millis(millis), id))
}

/// A short preview of a message for notifications and chat lists.
pub fn preview(text: &str, has_image: bool) -> String {
    if text.is_empty() && has_image {
        return "[image]".to_owned();
    }
    let mut out: String = text.chars().take(PREVIEW_CHARS).collect();
    if text.chars().count() > PREVIEW_CHARS {
        out.push('…');
    }
    out
}

/// Image types accepted, identified by their bytes (never by the client's claim).
pub fn sniff_image(bytes: &[u8]) -> Option<&'static str> {
    let kind = infer::get(bytes)?;
    match kind.mime_type() {
        m @ ("image/jpeg" | "image/png" | "image/gif" | "image/webp") => Some(m),
        _ => None,
    }
}

/// The other member of a 1:1 chat.
pub fn other_member(members: &[ObjectId], me: &ObjectId) -> Option<ObjectId> {
    members.iter().find(|m| *m != me).copied()
}

/// Pure: for each of `users`, who sees their presence through `chats`
/// (see [`crate::model::ChatDoc::presence_partners`]), never across one of
/// the `blocks` (blocker, blocked); sorted, without repeats.
pub fn partners_by_user(
    users: &[ObjectId],
    chats: &[crate::model::ChatDoc],
    blocks: &[(ObjectId, ObjectId)],
) -> std::collections::HashMap<ObjectId, Vec<ObjectId>> {
    let mut out: std::collections::HashMap<ObjectId, Vec<ObjectId>> =
        users.iter().map(|u| (*u, Vec::new())).collect();
    for chat in chats {
        for member in chat.members.iter() {
            if let Some(list) = out.get_mut(member) {
                list.extend(chat.presence_partners(member));
            }
        }
    }
    for (user, list) in out.iter_mut() {
        list.retain(|p| !blocks.contains(&(*user, *p)) && !blocks.contains(&(*p, *user)));
        list.sort();
        list.dedup();
    }
    out
}

/// Pure: whether the members of a chat see each other's presence: every
/// member accepted it (opened it, wrote in it or accepted it) and nobody
/// blocked anybody.
pub fn presence_flows(
    members: &[ObjectId],
    accepted_by: &[ObjectId],
    blocked_by: &[ObjectId],
) -> bool {
    blocked_by.is_empty() && !members.is_empty() && members.iter().all(|m| accepted_by.contains(m))
}

/// Pure: the `getOnlineUser` list: which of `contacts` are online, as sorted hex ids.
pub fn online_list(
    contacts: &[ObjectId],
    online: &std::collections::HashSet<ObjectId>,
) -> Vec<String> {
    let mut list: Vec<String> = contacts
        .iter()
        .filter(|c| online.contains(c))
        .map(|c| c.to_hex())
        .collect();
    list.sort();
    list.dedup();
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_plans_expect_every_chunk_in_order_and_size() {
        let plan = ChunkPlan::new(600, 255);
        assert_eq!(plan.chunks, 3);
        assert_eq!(
            (0..3).map(|n| plan.expected_len(n)).collect::<Vec<_>>(),
            [255, 255, 90]
        );
        assert!(plan.check(0, 0, 255).is_ok());
        assert!(plan.check(2, 2, 90).is_ok());
        assert!(plan.check(1, 2, 255).is_err(), "a chunk skipped");
        assert!(plan.check(1, 1, 200).is_err(), "a short chunk");
        assert!(plan.check(0, -1, 255).is_err());
        let exact = ChunkPlan::new(510, 255);
        assert_eq!((exact.chunks, exact.expected_len(1)), (2, 255));
        assert_eq!(ChunkPlan::new(0, 255).chunks, 0);
        // A corrupt chunk size of 0 cannot divide by zero.
        assert_eq!(ChunkPlan::new(3, 0).chunks, 3);
    }

    #[test]
    fn media_names_are_ours() {
        let id = ObjectId::parse_str("0123456789abcdef01234567").unwrap();
        assert_eq!(
            media_file_name(&id, "image/png"),
            "0123456789abcdef01234567.png"
        );
        assert_eq!(
            media_file_name(&id, "text/html\"; x=1"),
            "0123456789abcdef01234567.bin"
        );
    }

    #[test]
    fn pair_key_is_order_independent() {
        let (a, b) = (ObjectId::new(), ObjectId::new());
        assert_eq!(pair_key(&a, &b), pair_key(&b, &a));
        assert_ne!(pair_key(&a, &b), pair_key(&a, &ObjectId::new()));
    }

    #[test]
    fn text_rules() {
        assert!(validate_text("   ").is_err());
        assert_eq!(validate_text("  hi ").unwrap(), "hi");
        assert!(validate_text(&"é".repeat(4000)).is_ok());
        assert!(validate_text(&"é".repeat(4001)).is_err());
        assert_eq!(validate_caption(None).unwrap(), "");
        assert_eq!(validate_caption(Some(" ")).unwrap(), "");
    }

    #[test]
    fn client_ids() {
        assert_eq!(
            validate_client_id(Some("abc-1")).unwrap(),
            Some("abc-1".into())
        );
        assert!(validate_client_id(Some("")).is_err());
        assert!(validate_client_id(Some("has space")).is_err());
        assert!(validate_client_id(Some(&"x".repeat(65))).is_err());
        assert_eq!(validate_client_id(None).unwrap(), None);
    }

    #[test]
    fn paging() {
        assert_eq!(page_size(None).unwrap(), 50);
        assert!(page_size(Some(0)).is_err());
        assert!(page_size(Some(101)).is_err());
        assert_eq!(window(None, None).unwrap(), Window::Latest);
        assert_eq!(window(Some(5), None).unwrap(), Window::Before(5));
        assert_eq!(window(None, Some(7)).unwrap(), Window::After(7));
        assert!(window(Some(1), Some(2)).is_err());
        assert!(window(Some(-1), None).is_err());
    }

    #[test]
    fn previews() {
        assert_eq!(preview("", true), "[image]");
        assert_eq!(preview("hello", false), "hello");
        let long = "a".repeat(200);
        assert_eq!(preview(&long, false).chars().count(), PREVIEW_CHARS + 1);
    }

    #[test]
    fn image_sniffing_uses_bytes() {
        let png = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0];
        assert_eq!(sniff_image(&png), Some("image/png"));
        assert_eq!(sniff_image(b"GIF89a......"), Some("image/gif"));
        assert_eq!(sniff_image(b"%PDF-1.4 not an image"), None);
        assert_eq!(sniff_image(b""), None);
    }

    #[test]
    fn ids() {
        assert!(parse_id("chatId", "nope").is_err());
        let id = ObjectId::new();
        assert_eq!(parse_id("chatId", &id.to_hex()).unwrap(), id);
        assert_eq!(
            other_member(&[id, ObjectId::new()], &id).map(|o| o != id),
            Some(true)
        );
    }

    fn chat(members: &[ObjectId], accepted: &[ObjectId], group: bool) -> crate::model::ChatDoc {
        let mut chat = crate::model::ChatDoc::empty(
            ObjectId::new(),
            members.to_vec(),
            String::new(),
            DateTime::now(),
        );
        chat.accepted_by = accepted.to_vec();
        if group {
            chat.kind = crate::model::ChatKind::Group;
        }
        chat
    }

    #[test]
    fn partners_of_several_users_from_one_list_of_chats() {
        let [a, b, c, d, e] = std::array::from_fn(|_| ObjectId::new());
        let chats = vec![
            chat(&[a, b], &[a, b], false),
            chat(&[a, c], &[a, c], false),
            chat(&[b, c], &[b, c], false),
            chat(&[c, d], &[c, d], false),
            chat(&[a, b], &[a, b], false),
            chat(&[a, e], &[a], false),
        ];
        let map = partners_by_user(&[a, d], &chats, &[]);
        let mut expect_a = vec![b, c];
        expect_a.sort();
        assert_eq!(map[&a], expect_a, "e never accepted");
        assert_eq!(map[&d], vec![c]);
        assert!(!map.contains_key(&b), "only the asked users");
        assert_eq!(
            partners_by_user(&[ObjectId::new()], &chats, &[])
                .values()
                .next(),
            Some(&Vec::new())
        );
    }

    #[test]
    fn groups_show_presence_between_members_who_accepted_and_never_across_a_block() {
        let [a, b, c, d] = std::array::from_fn(|_| ObjectId::new());
        let group = chat(&[a, b, c, d], &[a, b, c], true);
        let map = partners_by_user(&[a, d], std::slice::from_ref(&group), &[]);
        let mut expect = vec![b, c];
        expect.sort();
        assert_eq!(map[&a], expect);
        assert!(map[&d].is_empty(), "d did not accept the group");
        let map = partners_by_user(&[a], &[group], &[(c, a)]);
        assert_eq!(map[&a], vec![b], "c blocked a");
    }

    #[test]
    fn presence_needs_every_member_to_accept_and_no_block() {
        let (a, b) = (ObjectId::new(), ObjectId::new());
        assert!(!presence_flows(&[a, b], &[a], &[]), "a stranger's chat");
        assert!(presence_flows(&[a, b], &[b, a], &[]));
        assert!(!presence_flows(&[a, b], &[a, b], &[b]), "blocked");
        assert!(
            !presence_flows(&[a, b], &[], &[]),
            "chats from before acceptance"
        );
    }

    #[test]
    fn online_lists_hold_only_online_contacts_sorted() {
        let (a, b, c) = (ObjectId::new(), ObjectId::new(), ObjectId::new());
        let online: std::collections::HashSet<ObjectId> = [a, c].into_iter().collect();
        let mut expect = vec![a.to_hex(), c.to_hex()];
        expect.sort();
        assert_eq!(online_list(&[c, b, a, a], &online), expect);
        assert!(online_list(&[b], &online).is_empty());
    }

    #[test]
    fn cursor_round_trip_and_rejects_garbage() {
        let id = ObjectId::new();
        let at = DateTime::from_millis(1_700_000_000_123);
        assert_eq!(decode_cursor(&encode_cursor(at, &id)).unwrap(), (at, id));
        assert!(decode_cursor("!!!").is_err());
        assert!(decode_cursor(&URL_SAFE_NO_PAD.encode("12:nothex")).is_err());
    }
}
