//! `classify_path`: the endpoint classifier and path canonicalization.

use http::Method;

use super::ensure;
use crate::entra::classify::invariant::{self, Step};
use crate::entra::classify::{canonical_path, classify, Classification, EndpointKind};

/// The input is a request-target path (no query), as UTF-8.
///
/// * No server normalisation in [`invariant::normalisations`] turns a path classified
///   not-native-auth, or one endpoint, into a (different) native-auth endpoint.
/// * An endpoint is only ever assigned to a clean path: one with a canonical form. The
///   canonical form is a fixed point (canonicalizing it again changes nothing), every
///   normalisation leaves it unchanged up to a last segment's extension, it classifies
///   exactly as the path does, and the reference reader [`invariant::endpoint_of`] names
///   the same endpoint. A path without a canonical form is refused or not native auth.
/// * The method only matters for an endpoint: POST-only endpoints answer any other method
///   with `MethodNotAllowed`, everything else classifies the same under every method.
/// * A classified tenant is non-empty and unreserved characters only.
pub fn classify_path(data: &[u8]) {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(violation) = invariant::check(path) {
        super::violated(format_args!("{violation}"));
    }
    let post = classify(&Method::POST, path);

    for method in [Method::GET, Method::PUT, Method::DELETE, Method::OPTIONS] {
        let expected = match &post {
            // V1 endpoints and the V2 entry point are POST-only; V2 steps take any method.
            Classification::Endpoint { kind, .. } if *kind != EndpointKind::V2Api => {
                Classification::MethodNotAllowed(*kind)
            }
            other => other.clone(),
        };
        let seen = classify(&method, path);
        ensure!(
            seen == expected,
            "{path:?}: POST gives {post:?} but {method} gives {seen:?}"
        );
    }

    if let Classification::Endpoint { tenant, .. } = &post {
        ensure!(
            !tenant.is_empty()
                && tenant
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)),
            "{path:?}: tenant {tenant:?} is not unreserved characters only"
        );
    }

    let Some(canonical) = canonical_path(path) else {
        ensure!(
            matches!(
                post,
                Classification::Ambiguous(_) | Classification::NotNativeAuth
            ),
            "{path:?} has no canonical form but classifies as {post:?}"
        );
        return;
    };
    ensure!(
        canonical_path(&canonical).as_deref() == Some(canonical.as_str()),
        "{path:?}: canonical form {canonical:?} is not a fixed point"
    );
    let again = classify(&Method::POST, &canonical);
    ensure!(
        again == post,
        "{path:?} classifies as {post:?} but its canonical form {canonical:?} as {again:?}"
    );
    let stripped = invariant::apply(Step::Extension, &canonical);
    for normalised in invariant::normalisations(&canonical) {
        ensure!(
            normalised == canonical || normalised == stripped,
            "{path:?}: a normalisation changes its canonical form {canonical:?} into \
             {normalised:?}"
        );
    }
    let named = invariant::endpoint_of(&canonical);
    let kind = match &post {
        Classification::Endpoint { kind, .. } => Some(*kind),
        _ => None,
    };
    ensure!(
        named == kind,
        "{path:?}: the reference reader names {named:?} in {canonical:?}, the classifier says \
         {post:?}"
    );
    if let Classification::Endpoint { tenant, .. } = &post {
        ensure!(
            canonical.starts_with(&format!("/{tenant}/")),
            "{path:?}: tenant {tenant:?} is not the first segment of {canonical:?}"
        );
    }
}
