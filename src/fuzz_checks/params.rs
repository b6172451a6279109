//! `form_params`: parsing of a gated request's query string and form body.

use super::{ensure, header_line};
use crate::entra::params::{parse, ParamError, Params, MAX_INPUT_BYTES, MAX_PARAMS};

/// The input is a form body, optionally preceded by a query line: `?query\nbody`.
///
/// * Accepted parameters are at most [`MAX_PARAMS`], with visible-ASCII names unique
///   ASCII-case-insensitively and values without NUL.
/// * Whatever is accepted, a standard lenient parser (`form_urlencoded`, as servers use)
///   reads as the same pairs in the same order: the gateway and Entra see one set.
/// * Serialize → parse gives the same parameters, as a body and as a query, and serializing
///   again gives the same text (while the serialization fits [`MAX_INPUT_BYTES`]).
/// * Query and body are one set: moving the query into the body changes nothing, accepted
///   or refused.
/// * A name sent again, in another ASCII case, after an accepted set is refused as a
///   duplicate; so is every set that repeats a name.
pub fn form_params(data: &[u8]) {
    let (query, body) = header_line(data, |line| line.first() == Some(&b'?'));
    let query = match query.map(|q| std::str::from_utf8(&q[1..])) {
        Some(Ok(q)) => Some(q),
        Some(Err(_)) => return,
        None => None,
    };
    let parsed = parse(query, body);

    // One set: the same pieces in one body, when the joined input is under the size cap too.
    if let Some(q) = query {
        let joined = [q.as_bytes(), b"&", body].concat();
        if joined.len() <= MAX_INPUT_BYTES {
            let as_body = parse(None, &joined);
            ensure!(
                as_body == parsed,
                "query {q:?} and body {:?} parse as {parsed:?}, joined as {as_body:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    let params = match parsed {
        Ok(params) => params,
        Err(ParamError::Duplicate(name)) => {
            let lower = name.to_ascii_lowercase();
            let seen = pieces(query, body)
                .filter(|(n, _)| n.to_ascii_lowercase() == lower)
                .count();
            ensure!(
                seen >= 2,
                "refused as a duplicate of {name:?}, which a lenient parser sees {seen} time(s)"
            );
            return;
        }
        Err(_) => return,
    };

    ensure!(
        params.len() <= MAX_PARAMS,
        "{} parameters accepted",
        params.len()
    );
    let mut names = std::collections::HashSet::new();
    for (name, value) in params.iter() {
        ensure!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()),
            "accepted name {name:?}"
        );
        ensure!(
            names.insert(name.to_ascii_lowercase()),
            "name {name:?} accepted twice"
        );
        ensure!(!value.contains('\0'), "accepted a NUL in {name:?}");
    }

    // A bare `=` carries nothing: the strict parser skips it, a lenient one yields ("", "").
    let lenient: Vec<(String, String)> = pieces(query, body)
        .filter(|(n, v)| !(n.is_empty() && v.is_empty()))
        .collect();
    let strict: Vec<(String, String)> = params
        .iter()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    ensure!(
        strict == lenient,
        "strict parse {strict:?} differs from lenient parse {lenient:?}"
    );

    round_trip(&params);

    let first = params.iter().next().map(|(name, _)| name.to_owned());
    if let Some(name) = first {
        let flipped: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_lowercase() {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect();
        let extra: String = form_urlencoded::Serializer::new(String::new())
            .append_pair(&flipped, "1")
            .finish();
        let body_again = [body, b"&", extra.as_bytes()].concat();
        if query.map_or(0, str::len) + body_again.len() <= MAX_INPUT_BYTES {
            let again = parse(query, &body_again);
            ensure!(
                matches!(&again, Err(ParamError::Duplicate(n)) if n.eq_ignore_ascii_case(&name)),
                "{name:?} sent again as {flipped:?} gives {again:?}"
            );
        }
    }
}

/// Serialization round trips, or is refused only for growing past the size cap.
fn round_trip(params: &Params) {
    let form = params.to_form_string();
    if form.len() > MAX_INPUT_BYTES {
        ensure!(
            parse(None, form.as_bytes()) == Err(ParamError::TooLarge),
            "a serialization over the size cap is not refused as too large"
        );
        return;
    }
    for (what, again) in [
        ("body", parse(None, form.as_bytes())),
        ("query", parse(Some(&form), b"")),
    ] {
        ensure!(
            again.as_ref() == Ok(params),
            "serialized {params:?} as {form:?}, which parses as a {what} to {again:?}"
        );
    }
    ensure!(
        parse(None, form.as_bytes()).map(|p| p.to_form_string()) == Ok(form.clone()),
        "serializing {form:?} again gives other text"
    );
}

/// The pairs a lenient `application/x-www-form-urlencoded` parser reads, query first.
fn pieces<'a>(
    query: Option<&'a str>,
    body: &'a [u8],
) -> impl Iterator<Item = (String, String)> + 'a {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .chain(form_urlencoded::parse(body))
        .map(|(n, v)| (n.into_owned(), v.into_owned()))
}
