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
pub fn new_messages(sender_name: &str, count: u64, preview: &str, link: &str) -> Rendered {
    let what = if count == 1 {
        "1 new message".to_owned()
    } else {
        format!("{count} new messages")
    };
    Rendered {
        subject: format!("{what} from {sender_name}"),
        text: format!("{sender_name} wrote: {preview}\n\n{what} are waiting for you: {link}\n"),
        html: format!(
            "<p><b>{}</b> wrote: {}</p><p><a href=\"{}\">{} are waiting for you</a></p>",
            escape(sender_name),
            escape(preview),
            escape(link),
            escape(&what)
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
    fn notification_escapes_user_text() {
        let m = new_messages("<b>Eve</b>", 3, "a < b & \"c\"", "https://app/chat/1");
        assert!(m.subject.starts_with("3 new messages"));
        assert!(m.html.contains("&lt;b&gt;Eve&lt;/b&gt;"));
        assert!(m.html.contains("a &lt; b &amp; &quot;c&quot;"));
        assert!(!m.html.contains("<b>Eve"));
        assert!(
            new_messages("Ann", 1, "hi", "x")
                .subject
                .starts_with("1 new message from")
        );
    }
}
