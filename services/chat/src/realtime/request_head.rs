//! A socket's connect request, in allocations of its own.
//!
//! hyper parses the URI and the header values of a request as slices of
//! the connection's read buffer (16 KiB once grown), axum keeps a copy of
//! the URI in the extensions ([`OriginalUri`]), and engineioxide keeps the
//! connect request's head for the socket's whole life (for `req_parts()`).
//! Those slices would pin the read buffer to every socket; copied, the
//! buffer is freed once the connection is upgraded.

use axum::extract::{OriginalUri, Request};
use axum::http::{HeaderMap, HeaderValue, Uri};

/// Pure: `request` with its URI, axum's copy of it and its header values
/// copied out of whatever buffer they share.
pub fn own_head(mut request: Request) -> Request {
    if let Ok(uri) = request.uri().to_string().parse::<Uri>() {
        *request.uri_mut() = uri;
    }
    if let Some(OriginalUri(original)) = request.extensions_mut().remove::<OriginalUri>()
        && let Ok(uri) = original.to_string().parse::<Uri>()
    {
        request.extensions_mut().insert(OriginalUri(uri));
    }
    let mut headers = HeaderMap::with_capacity(request.headers().len());
    for (name, value) in request.headers() {
        let mut owned = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        owned.set_sensitive(value.is_sensitive());
        headers.append(name.clone(), owned);
    }
    *request.headers_mut() = headers;
    request
}

/// [`own_head`] as middleware, for the Socket.IO route.
pub async fn owned_head(request: Request) -> Request {
    own_head(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    #[test]
    fn the_head_is_kept_as_it_was() {
        let request = Request::builder()
            .uri("/socket.io/?EIO=4&transport=websocket&token=a.b.c")
            .header("origin", "https://chat.example.com")
            .header("x-two", "1")
            .header("x-two", "2")
            .body(Body::empty())
            .map(own_head);
        let request = request.ok();
        let request = request.as_ref();
        assert_eq!(
            request.map(|r| r.uri().to_string()).as_deref(),
            Some("/socket.io/?EIO=4&transport=websocket&token=a.b.c")
        );
        let headers = request.map(Request::headers);
        assert_eq!(
            headers
                .and_then(|h| h.get("origin"))
                .map(HeaderValue::as_bytes),
            Some(&b"https://chat.example.com"[..])
        );
        assert_eq!(headers.map(|h| h.get_all("x-two").iter().count()), Some(2));
    }

    #[test]
    fn nothing_points_into_the_buffer_the_head_was_parsed_from() {
        // As hyper does: the URI and values are slices of one read buffer.
        let buffer = axum::body::Bytes::from(
            b"/socket.io/?EIO=4&transport=websocket https://chat.example.com".to_vec(),
        );
        let inside = |p: *const u8| buffer.as_ptr_range().contains(&p);
        let uri = Uri::from_maybe_shared(buffer.slice(0..37)).ok();
        let origin = HeaderValue::from_maybe_shared(buffer.slice(38..)).ok();
        let (Some(uri), Some(origin)) = (uri, origin) else {
            panic!("test head did not parse");
        };
        let mut request = Request::new(Body::empty());
        *request.uri_mut() = uri.clone();
        request.extensions_mut().insert(OriginalUri(uri));
        request.headers_mut().insert("origin", origin);
        assert!(inside(request.headers()["origin"].as_bytes().as_ptr()));
        assert!(inside(request.uri().path().as_ptr()));

        let owned = own_head(request);
        assert!(!inside(owned.headers()["origin"].as_bytes().as_ptr()));
        assert_eq!(owned.uri().query(), Some("EIO=4&transport=websocket"));
        assert!(!inside(owned.uri().path().as_ptr()));
        let original = owned.extensions().get::<OriginalUri>().map(|o| &o.0);
        assert_eq!(original, Some(owned.uri()));
        assert!(original.is_some_and(|o| !inside(o.path().as_ptr())));
    }
}
