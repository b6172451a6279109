//! `phone_target`: parsing of an SMS destination (`challenge_target`).

use super::ensure;
use crate::defense::destination::parse_phone;
use crate::defense::MAX_E164_DIGITS;

/// The input is a target as a client writes it (`+44 7700 900123`, `0044…`), as UTF-8.
///
/// * A parsed number's `e164` is `+`, its calling code, then digits: at most 15 in all.
/// * `e164` is canonical: it parses to the same `Phone`, and so does its `00` form.
/// * `Debug` (what reaches a log line) does not show the number: not the digits after the
///   calling code, once there are enough of them to tell (four or more).
pub fn phone_target(data: &[u8]) {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    let Some(phone) = parse_phone(target) else {
        return;
    };
    let e164 = &phone.e164;
    let digits = e164.strip_prefix('+').unwrap_or_default();
    ensure!(
        !digits.is_empty()
            && digits.len() <= MAX_E164_DIGITS
            && digits.bytes().all(|b| b.is_ascii_digit()),
        "{target:?} parses to e164 {e164:?}"
    );
    let code = phone.calling_code.to_string();
    ensure!(
        digits.starts_with(&code),
        "{target:?}: e164 {e164:?} does not start with calling code {code}"
    );

    let again = parse_phone(e164);
    ensure!(
        again.as_ref() == Some(&phone),
        "{target:?} parses to {phone:?}, its e164 to {again:?}"
    );
    let international = parse_phone(&format!("00{digits}"));
    ensure!(
        international.as_ref() == Some(&phone),
        "{target:?} parses to {phone:?}, its 00 form to {international:?}"
    );

    let national = &digits[code.len()..];
    if national.len() >= 4 {
        let shown = format!("{phone:?}");
        ensure!(
            !shown.contains(national),
            "Debug of a parsed {target:?} shows its national number"
        );
    }
}
