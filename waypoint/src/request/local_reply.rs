//! Replies the waypoint makes itself instead of the upstream's: a bad request (400), no
//! service or route (404), the client's body stalled (408), no destination or an upstream
//! failure (503), a timeout (504). A denial by policy is the [`super::authz`] stage's, made
//! with the same [`text`].

use http::{Response, StatusCode};

use crate::body::{self, Body};

/// A plain-text local reply.
pub fn text(status: StatusCode, msg: impl Into<bytes::Bytes>) -> Response<Body> {
    let mut r = Response::new(body::full(msg));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    r
}
