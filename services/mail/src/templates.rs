//! Mail texts (plain and HTML) for login codes and notifications.

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

/// The "N new messages" notification.
///
/// It carries only what the recipient needs to act: how many messages wait
/// and a link to the chat. Nothing another user chose (their name, the
/// message text) appears, so a stranger cannot put words of theirs into
/// someone's inbox under parley's name.
pub fn new_messages(count: u64, link: &str) -> Rendered {
    let what = if count == 1 {
        "1 new message".to_owned()
    } else {
        format!("{count} new messages")
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
}
