//! Mail texts (plain and HTML) for login codes and notifications.
//!
//! A notification says how many messages wait and links to the chat; it
//! never carries what a sender chose (their name, the message text), so a
//! stranger cannot put words of theirs into someone's inbox under parley's
//! name. The one user-chosen text it shows is a group's name, because the
//! recipient chose to be in that group (to a member who was added and never
//! accepted it, the mail names no group: see
//! [`crate::audience::GroupView::name_for`]); it is sanitised to one short
//! line and escaped in HTML.

use chrono::{DateTime, Utc};

/// A mail ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub text: String,
    /// HTML body.
    pub html: String,
}

/// Escapes text for HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The login code mail.
pub fn login_code(code: &str, expires_at: DateTime<Utc>) -> Rendered {
    let until = expires_at.format("%H:%M UTC").to_string();
    Rendered {
        subject: format!("Your parley login code: {code}"),
        text: format!(
            "Your login code is {code}\n\nIt works once and until {until}.\nIf you did not ask for it, ignore this mail.\n"
        ),
        html: format!(
            "<p>Your login code is</p><p style=\"font-size:24px;font-weight:bold;letter-spacing:4px\">{}</p>\
             <p>It works once and until {}.</p><p>If you did not ask for it, ignore this mail.</p>",
            escape(code),
            escape(&until)
        ),
    }
}

/// The longest group name a mail shows, in characters (with the "…").
pub const GROUP_NAME_MAX: usize = 64;

/// Pure: a group's name as a mail may show it, on one line and
/// unambiguous: whitespace of any kind (newlines included) collapses to
/// one space, other control characters and the bidirectional controls
/// (overrides, embeddings, isolates and marks, which could make the text
/// read differently from what it is) are dropped, the ends trimmed, and
/// a name longer than [`GROUP_NAME_MAX`] characters is cut with "…".
/// Not HTML-escaped: see [`escape`].
pub fn sanitize_group_name(raw: &str) -> String {
    let cleaned: String = raw
        .chars()
        .filter_map(|c| {
            if c.is_whitespace() {
                Some(' ')
            } else if c.is_control() || is_bidi_control(c) {
                None
            } else {
                Some(c)
            }
        })
        .collect();
    let name = cleaned.split_whitespace().collect::<Vec<_>>().join(" ");
    if name.chars().count() <= GROUP_NAME_MAX {
        return name;
    }
    let cut: String = name.chars().take(GROUP_NAME_MAX - 1).collect();
    format!("{}…", cut.trim_end())
}

/// The characters of Unicode's `Bidi_Control` property.
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// The "N new messages" notification for a 1:1 chat.
///
/// It carries only what the recipient needs to act: how many messages wait
/// and a link to the chat. Nothing another user chose (their name, the
/// message text) appears, so a stranger cannot put words of theirs into
/// someone's inbox under parley's name.
pub fn new_messages(count: u64, link: &str) -> Rendered {
    summary(count, "", link)
}

/// The "N new messages in \"group\"" notification for a group chat.
///
/// Like [`new_messages`], plus the group's name (passed as stored, shown
/// through [`sanitize_group_name`]; "" says "in a group"): a member has
/// several groups and needs to know which one waits, and the name is that
/// of a group the recipient chose to be in, shown in their own client too.
/// It is still user-chosen text, so it is kept to one short line without
/// control characters and escaped in HTML. Still no sender names and no
/// message text.
pub fn new_group_messages(count: u64, group_name: &str, link: &str) -> Rendered {
    let name = sanitize_group_name(group_name);
    let place = if name.is_empty() {
        " in a group".to_owned()
    } else {
        format!(" in \"{name}\"")
    };
    summary(count, &place, link)
}

/// The notification's texts; `place` is empty or starts with a space.
fn summary(count: u64, place: &str, link: &str) -> Rendered {
    let what = if count == 1 {
        format!("1 new message{place}")
    } else {
        format!("{count} new messages{place}")
    };
    let them = if count == 1 { "it" } else { "them" };
    Rendered {
        subject: format!("You have {what} on parley"),
        text: format!(
            "You have {what} on parley.\n\nOpen parley to read {them}: {link}\n\nYou get this mail because you were offline when it arrived.\n"
        ),
        html: format!(
            "<p>You have {} on parley.</p><p><a href=\"{}\">Open parley to read {them}</a></p>\
             <p>You get this mail because you were offline when it arrived.</p>",
            escape(&what),
            escape(link)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_mail_has_code_and_expiry() {
        let at = DateTime::parse_from_rfc3339("2026-01-02T10:05:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let m = login_code("123456", at);
        assert!(m.subject.contains("123456"));
        assert!(m.text.contains("123456") && m.text.contains("10:05 UTC"));
        assert!(m.html.contains("123456"));
    }

    #[test]
    fn notification_says_how_many_and_links_nothing_else() {
        let m = new_messages(3, "https://app/chat/1?a=1&b=\"2\"");
        assert_eq!(m.subject, "You have 3 new messages on parley");
        assert!(m.text.contains("https://app/chat/1"));
        assert!(
            m.html
                .contains("https://app/chat/1?a=1&amp;b=&quot;2&quot;")
        );
        assert_eq!(
            new_messages(1, "x").subject,
            "You have 1 new message on parley"
        );
    }

    #[test]
    fn group_names_are_one_short_plain_line() {
        assert_eq!(sanitize_group_name("Design team"), "Design team");
        assert_eq!(
            sanitize_group_name("  Design\r\n\tteam \u{2028} 2\n"),
            "Design team 2"
        );
        assert_eq!(sanitize_group_name("a\u{0}b\u{7f}c\u{9b}d"), "abcd");
        // RLO would show "evil.com/gpj.exe" as "evil.com/exe.jpg" and so on.
        assert_eq!(
            sanitize_group_name("x\u{202E}gpj.exe\u{202C} \u{2066}y\u{2069}\u{200F}\u{61C}"),
            "xgpj.exe y"
        );
        assert_eq!(sanitize_group_name(" \n\u{202A} "), "");
        let long = "é".repeat(80);
        let cut = sanitize_group_name(&long);
        assert_eq!(cut.chars().count(), GROUP_NAME_MAX);
        assert!(cut.ends_with("é…"), "{cut}");
        assert_eq!(sanitize_group_name(&"a".repeat(64)), "a".repeat(64));
        // No space is left before the ellipsis.
        let spaced = format!("{} {}", "a".repeat(62), "b".repeat(10));
        assert_eq!(sanitize_group_name(&spaced), format!("{}…", "a".repeat(62)));
    }

    #[test]
    fn group_notification_names_the_group() {
        let m = new_group_messages(3, "Design team", "https://app/chat/1");
        assert_eq!(
            m.subject,
            "You have 3 new messages in \"Design team\" on parley"
        );
        assert!(
            m.text
                .starts_with("You have 3 new messages in \"Design team\" on parley.\n"),
            "{}",
            m.text
        );
        assert!(
            m.html
                .contains("You have 3 new messages in &quot;Design team&quot; on parley."),
            "{}",
            m.html
        );
        assert_eq!(
            new_group_messages(1, "x", "l").subject,
            "You have 1 new message in \"x\" on parley"
        );
        assert_eq!(
            new_group_messages(2, "\u{202E} \n", "l").subject,
            "You have 2 new messages in a group on parley"
        );
    }

    #[test]
    fn group_names_cannot_inject_lines_or_markup() {
        let m = new_group_messages(
            2,
            "<b>Team</b>\r\nBcc: victim@example.com\n<script>",
            "https://app/chat/1",
        );
        assert!(!m.subject.contains('\n') && !m.subject.contains('\r'));
        assert!(
            m.subject
                .contains("\"<b>Team</b> Bcc: victim@example.com <script>\"")
        );
        assert!(!m.html.contains("<b>") && !m.html.contains("<script>"));
        assert!(
            m.html
                .contains("&lt;b&gt;Team&lt;/b&gt; Bcc: victim@example.com &lt;script&gt;")
        );
        assert_eq!(m.text.lines().next(), Some(&*format!("{}.", m.subject)));
    }

    #[test]
    fn direct_notification_names_nobody() {
        assert_eq!(new_messages(2, "l"), summary(2, "", "l"));
        assert!(!new_messages(2, "l").subject.contains(" in "));
    }
}
