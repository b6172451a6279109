//! The masked phone labels Entra shows for SMS methods (`login_hint` of an introspect
//! method, `challenge_target_label` of a challenge answer), read as what they reveal.
//!
//! Sources disagree on the mask: Entra's docs show `+1********6` (country code and the last
//! digit), Microsoft's mock API for the iOS SDK tests `+3538331***` (the last three digits
//! hidden), msal-browser's fixtures `+1***5678` and `000000***0000` (no `+`). So a label is
//! read as runs of visible digits between runs of mask characters, with no assumption on how
//! many digits a mask hides.

/// What a masked phone label shows: a pattern over the digits of an E.164 number.
#[derive(Debug, Clone)]
pub(crate) struct MaskedPhone {
    /// `^…$` over the number's digits: each visible run literally, each mask run as one or
    /// more digits, and (for a label without `+`) a country code of 1 to 3 digits first.
    pattern: regex::Regex,
}

impl PartialEq for MaskedPhone {
    fn eq(&self, other: &Self) -> bool {
        self.pattern.as_str() == other.pattern.as_str()
    }
}

/// Characters labels use to hide a digit.
fn is_mask(c: char) -> bool {
    matches!(c, '*' | '•' | '●' | 'x' | 'X' | '#')
}

impl MaskedPhone {
    /// Read `label`; `None` unless it is a phone label with at least one mask and one
    /// visible digit (spaces, dashes, dots and brackets between them are ignored).
    pub(crate) fn parse(label: &str) -> Option<Self> {
        let label = label.trim();
        let (international, body) = match label.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, label),
        };
        let mut pattern = String::from(if international { "^" } else { r"^\d{1,3}" });
        let (mut digits, mut masks, mut in_mask) = (0, 0, false);
        for c in body.chars() {
            if c.is_ascii_digit() {
                pattern.push(c);
                digits += 1;
                in_mask = false;
            } else if is_mask(c) {
                if !in_mask {
                    pattern.push_str(r"\d+");
                    masks += 1;
                }
                in_mask = true;
            } else if !matches!(c, ' ' | '-' | '.' | '(' | ')') {
                return None;
            }
        }
        pattern.push('$');
        if digits == 0 || masks == 0 {
            return None;
        }
        regex::Regex::new(&pattern)
            .ok()
            .map(|pattern| Self { pattern })
    }

    /// Whether the E.164 number `e164` (`+` and digits) could be the one behind the label:
    /// every visible digit where the label shows it, and each mask hiding at least one digit.
    pub(crate) fn agrees_with(&self, e164: &str) -> bool {
        e164.strip_prefix('+').is_some_and(|digits| {
            !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && self.pattern.is_match(digits)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mask_style_seen_agrees_with_its_number_only() {
        let cases: &[(&str, &str, bool)] = &[
            // Entra docs.
            ("+1********6", "+14255550106", true),
            ("+1********6", "+14255550107", false),
            ("+1********6", "+442071234566", false),
            // iOS mock API: the tail hidden.
            ("+3538331***", "+353833123456", true),
            ("+3538331***", "+353853123456", false),
            ("+3538331***", "+3538331", false),
            // msal-browser fixtures.
            ("+1***5678", "+14255555678", true),
            ("+1***5678", "+14255555679", false),
            ("000000***0000", "+1000000550000", true),
            ("000000***0000", "+44000000120000", true),
            ("000000***0000", "+1000001550000", false),
            // Spacing and other mask characters.
            ("+44 •••• ••• 456", "+447700900456", true),
            ("+44 •••• ••• 456", "+337700900456", false),
            ("+1 (425) XXX-XX06", "+14255550106", true),
            // A run inside the number.
            ("+44**009**56", "+447700900456", true),
            ("+44**009**56", "+447700800456", false),
            // Not an E.164 number.
            ("+1********6", "14255550106", false),
            ("+1********6", "+1425555O106", false),
        ];
        for (label, phone, agrees) in cases {
            let masked = MaskedPhone::parse(label).unwrap_or_else(|| panic!("{label}"));
            assert_eq!(masked.agrees_with(phone), *agrees, "{label} vs {phone}");
        }
    }

    #[test]
    fn labels_that_hide_nothing_or_show_nothing_are_not_phone_labels() {
        for label in [
            "",
            "+14255550106",
            "***",
            "+",
            "c***r@co**o**o.com",
            "+1****abc",
        ] {
            assert_eq!(MaskedPhone::parse(label), None, "{label}");
        }
    }
}
