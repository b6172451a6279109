//! The body type of everything the gateway sends, upstream or to clients: a leaf, so the
//! upstream client and the proxy around it both use it without using each other.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of everything the gateway sends, upstream or to clients.
pub type Body = BoxBody<Bytes, BoxError>;

/// A complete body as a [`Body`].
pub fn full(body: http_body_util::Full<Bytes>) -> Body {
    use http_body_util::BodyExt;
    body.map_err(|never| match never {}).boxed()
}

/// A streamed body (client request or upstream response) as a [`Body`].
pub(crate) fn streamed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes, Error = hyper::Error> + Send + Sync + 'static,
{
    use http_body_util::BodyExt;
    body.map_err(BoxError::from).boxed()
}
