//! A reader for the shape nearly every message has: one JSON object whose values are
//! strings without escape sequences, integers, `true`, `false` or `null`, each contract
//! field at most once and of its JSON type.
//!
//! It reads such a message into the same [`Wire`] as serde_json would, in one pass and
//! without serde's per-field dispatch, and gives up ([`None`]) at the first byte outside
//! that shape: an escape, a control character in a string, a fraction or exponent, a
//! nested array or object, a repeated contract field, a wrong JSON type, malformed JSON.
//! The caller then runs the reference parse (depth check and serde_json), which decides
//! the message and, when it fails, the reason. Whatever this reader accepts, serde_json
//! accepts with the same result; the property tests of `event` hold it to that.
//!
//! A message it accepts is also one object with nothing nested, so the checks that come
//! before JSON parsing in the contract (only whitespace, not an object, too deep) cannot
//! fail for it.

use std::borrow::Cow;

use super::Wire;

/// Where a contract field's value goes.
enum Slot<'w, 'a> {
    Text(&'w mut Option<Cow<'a, str>>),
    Integer(&'w mut Option<i64>),
    Boolean(&'w mut Option<bool>),
}

/// The position of a contract field (one bit of the fields already read) and where its
/// value goes; `None` for a field the contract does not know.
fn slot<'w, 'a>(wire: &'w mut Wire<'a>, name: &str) -> Option<(u32, Slot<'w, 'a>)> {
    use Slot::{Boolean, Integer, Text};
    Some(match name {
        "event_id" => (0, Text(&mut wire.event_id)),
        "type" => (1, Text(&mut wire.kind)),
        "occurred_at" => (2, Text(&mut wire.occurred_at)),
        "customer_id" => (3, Text(&mut wire.customer_id)),
        "segment" => (4, Text(&mut wire.segment)),
        "region" => (5, Text(&mut wire.region)),
        "channel" => (6, Text(&mut wire.channel)),
        "survey" => (7, Text(&mut wire.survey)),
        "score" => (8, Integer(&mut wire.score)),
        "comment" => (9, Text(&mut wire.comment)),
        "ticket_id" => (10, Text(&mut wire.ticket_id)),
        "opened_at" => (11, Text(&mut wire.opened_at)),
        "agent_replies" => (12, Integer(&mut wire.agent_replies)),
        "reopens" => (13, Integer(&mut wire.reopens)),
        "subscription_id" => (14, Text(&mut wire.subscription_id)),
        "plan" => (15, Text(&mut wire.plan)),
        "price" => (16, Integer(&mut wire.price)),
        "quantity" => (17, Integer(&mut wire.quantity)),
        "currency" => (18, Text(&mut wire.currency)),
        "interval" => (19, Text(&mut wire.interval)),
        "interval_count" => (20, Integer(&mut wire.interval_count)),
        "author" => (21, Text(&mut wire.author)),
        "agent_id" => (22, Text(&mut wire.agent_id)),
        "public" => (23, Boolean(&mut wire.public)),
        "priority" => (24, Text(&mut wire.priority)),
        "reason" => (25, Text(&mut wire.reason)),
        "trial_ends_at" => (26, Text(&mut wire.trial_ends_at)),
        _ => return None,
    })
}

/// Reads the message's fields into `wire`, which starts empty; `None` when the message is
/// not of the shape this reader takes (which says nothing about whether it is valid), and
/// `wire` is then left partly filled. Filled in place: the fields take a few hundred bytes.
pub(super) fn read<'a>(text: &'a str, wire: &mut Wire<'a>) -> Option<()> {
    let mut cursor = Cursor {
        text,
        bytes: text.as_bytes(),
        at: 0,
    };
    cursor.expect(b'{')?;
    if cursor.peek() == Some(b'}') {
        cursor.at += 1;
    } else {
        let mut read_fields = 0u32;
        loop {
            cursor.expect(b'"')?;
            let name = cursor.string()?;
            cursor.expect(b':')?;
            cursor.skip_whitespace();
            match slot(wire, name) {
                Some((position, slot)) => {
                    let bit = 1 << position;
                    if read_fields & bit != 0 {
                        return None;
                    }
                    read_fields |= bit;
                    match slot {
                        Slot::Text(value) => *value = cursor.text_or_null()?.map(Cow::Borrowed),
                        Slot::Integer(value) => *value = cursor.integer_or_null()?,
                        Slot::Boolean(value) => *value = cursor.boolean_or_null()?,
                    }
                }
                None => cursor.skip_scalar()?,
            }
            cursor.skip_whitespace();
            match cursor.peek() {
                Some(b',') => cursor.at += 1,
                Some(b'}') => {
                    cursor.at += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    cursor.skip_whitespace();
    (cursor.at == cursor.bytes.len()).then_some(())
}

struct Cursor<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// JSON's four whitespace bytes, as serde_json skips them.
    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\t' | b'\r')) {
            self.at += 1;
        }
    }

    /// Skips whitespace, then takes `byte`.
    fn expect(&mut self, byte: u8) -> Option<()> {
        self.skip_whitespace();
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// The rest of a string whose opening quote was taken: `None` at an escape or a
    /// control character, which serde_json decodes or rejects.
    fn string(&mut self) -> Option<&'a str> {
        let start = self.at;
        let end = string_end(self.bytes, start)?;
        if self.bytes[end] != b'"' {
            return None;
        }
        self.at = end + 1;
        // Both ends are next to an ASCII quote, hence on character boundaries.
        self.text.get(start..end)
    }

    /// Takes `literal` if the input continues with it.
    fn literal(&mut self, literal: &[u8]) -> Option<()> {
        self.bytes[self.at..]
            .starts_with(literal)
            .then(|| self.at += literal.len())
    }

    fn text_or_null(&mut self) -> Option<Option<&'a str>> {
        match self.peek()? {
            b'"' => {
                self.at += 1;
                self.string().map(Some)
            }
            b'n' => self.literal(b"null").map(|()| None),
            _ => None,
        }
    }

    fn integer_or_null(&mut self) -> Option<Option<i64>> {
        match self.peek()? {
            b'n' => self.literal(b"null").map(|()| None),
            _ => self.integer().map(Some),
        }
    }

    fn boolean_or_null(&mut self) -> Option<Option<bool>> {
        match self.peek()? {
            b't' => self.literal(b"true").map(|()| Some(true)),
            b'f' => self.literal(b"false").map(|()| Some(false)),
            b'n' => self.literal(b"null").map(|()| None),
            _ => None,
        }
    }

    /// An integer of at most 18 digits, which always fits an `i64`. `-0` is 0, as the
    /// contract says. A fraction or an exponent would follow the digits where the object
    /// needs a comma or its end, so [`read`] gives up on it there.
    fn integer(&mut self) -> Option<i64> {
        let negative = self.peek() == Some(b'-');
        let start = self.at + usize::from(negative);
        let digits = self.bytes[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let end = start + digits;
        if digits == 0 || digits > 18 || (digits > 1 && self.bytes[start] == b'0') {
            return None;
        }
        let magnitude = self.bytes[start..end]
            .iter()
            .fold(0i64, |value, b| value * 10 + i64::from(b - b'0'));
        self.at = end;
        Some(if negative { -magnitude } else { magnitude })
    }

    /// The value of a field the contract does not know: only checked to be well formed.
    fn skip_scalar(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => {
                self.at += 1;
                self.string().map(|_| ())
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.integer().map(|_| ()),
        }
    }
}

/// The position of the first quote, backslash or control character at or after `start`:
/// eight bytes at a time, then byte by byte.
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH_BITS: u64 = ONES * 0x80;
    /// The high bit of each byte of `word` below `limit` (at most 0x80); exact for the
    /// lowest such byte, which is all the caller reads.
    fn below(word: u64, limit: u8) -> u64 {
        word.wrapping_sub(ONES * u64::from(limit)) & !word & HIGH_BITS
    }
    let mut at = start;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let Ok(chunk) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let word = u64::from_le_bytes(chunk);
        let found = below(word ^ (ONES * u64::from(b'"')), 1)
            | below(word ^ (ONES * u64::from(b'\\')), 1)
            | below(word, 0x20);
        if found != 0 {
            return Some(at + found.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    bytes[at..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|length| at + length)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::string_end;

    proptest! {
        /// The eight-byte scan finds what a byte-by-byte scan finds, wherever the special
        /// byte falls in a word and whatever bytes around it borrow from it.
        #[test]
        fn the_end_of_a_string_is_found_as_byte_by_byte(
            bytes in prop::collection::vec(prop_oneof![
                4 => 0x20..=0xffu8,
                1 => prop::sample::select(&[b'"', b'\\', 0, 1, 0x1f, 0x21, 0x5b, 0x5d, 0x7f, 0x80, 0xff][..]),
            ], 0..60),
            start in 0..16usize,
        ) {
            let start = start.min(bytes.len());
            let expected = bytes[start..]
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .map(|length| start + length);
            prop_assert_eq!(string_end(&bytes, start), expected);
        }
    }
}
