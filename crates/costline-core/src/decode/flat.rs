//! The fast path of the decoder: one forward pass over an object of at most 2 KiB whose values
//! are all strings without escapes, numbers, booleans or `null` — what every well-behaved
//! producer sends.
//!
//! It accepts only what serde_json accepts, and hands out the same raw value texts (counts,
//! read on the way, as their values); anything else (nested values, escapes, a repeated key,
//! bytes that are not UTF-8, any syntax error) makes it give up, and the caller walks the
//! message again with serde_json, which decides and words the error. So it never needs to
//! explain a rejection, and giving up too often only costs speed; accepting what serde_json
//! would reject would be a bug. `tests::fast_path_agrees_with_serde_json` checks the two
//! against each other.
//!
//! A key is first compared with the keys that followed the key before it in earlier messages
//! ([`KeyOrder`]), and searched for and looked up only when it is none of them.
//!
//! It reads the message as bytes and checks UTF-8 itself, which an all-ASCII message (nearly
//! every event) needs no pass for; and it cuts the texts it hands out without index checks
//! ([`token`], the one `unsafe` function here, with its argument).

// `token` and its three callers: the only unsafe code of the decoder.
#![allow(unsafe_code)]

use wide::u8x16;

use super::{Field, FieldValue, RawFields, FIELD_COUNT};
use crate::symbols::same_bytes;

/// Words of quote bits kept on the stack, 64 bytes of message each: messages up to 2 KiB take
/// the fast path; longer ones (far beyond any real usage event) go to serde_json.
pub(super) const QUOTE_WORDS: usize = 32;

/// Fills `fields` from `message`; `None` means "not sure: ask serde_json" (which also tells
/// whether the message is UTF-8 at all). `order` holds the key order of the messages before,
/// and learns this one's.
#[inline(always)]
pub(super) fn scan<'a>(message: &'a [u8], fields: &mut RawFields<'a>, order: &mut KeyOrder) -> Option<()> {
    // One vectorised pass finds every quote and rules out escapes and control characters
    // (JSON allows them only as whitespace between tokens, which compact producers do not
    // send): a string then ends at the next quote, and its content needs no further check here.
    // The pass also tells whether the message holds no DEL and no C1 control either, in which
    // case the text fields need no character check of their own, and whether it is all ASCII,
    // and so UTF-8 without a check of its own (nearly every event is).
    let mut quotes = [0; QUOTE_WORDS];
    let pass = mark_quotes(message, &mut quotes)?;
    if !pass.ascii {
        simdutf8::basic::from_utf8(message).ok()?;
    }
    let mut scanner = Scanner { bytes: message, quotes: &quotes, at: 0 };
    if scanner.next_token()? != b'{' {
        return None;
    }
    if scanner.next_token()? != b'}' {
        // Not empty: that token was the first key's opening quote, which `string` reads.
        scanner.at -= 1;
        let mut after = KeyOrder::START;
        loop {
            let field = match order.expected(after, message, scanner.at) {
                Some((field, key_len)) => {
                    scanner.at += key_len;
                    field
                }
                None => {
                    let key = scanner.string()?;
                    if scanner.next_token()? != b':' {
                        return None;
                    }
                    // SAFETY: inside a string the scanner found between two quote bits.
                    let field = Field::from_key(unsafe { token(message, key.0 + 1, key.1 - 1) });
                    order.learn(after, field);
                    field
                }
            };
            after = field as usize;
            let value = scanner.value()?;
            if !matches!(field, Field::Unknown) {
                let slot = &mut fields.values[field as usize];
                if slot.is_some() {
                    return None;
                }
                *slot = Some(value);
            }
            match scanner.next_token()? {
                b',' => scanner.skip_space(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    scanner.skip_space();
    fields.clean_text = pass.clean;
    (scanner.at == scanner.bytes.len()).then_some(())
}

/// Which key came after which, in the messages so far: the last two keys seen after each
/// known key (and after `{`), the last first. Producers write their keys in a fixed order,
/// leaving out some optional ones, so the key after a given one is one of a few. (In the load
/// generator's stream, where about half the fields are optional, the first guess is right for
/// 86 % of the keys and the second for another 11 %; guessing by position, 19 %.)
#[derive(Debug, Clone)]
pub(super) struct KeyOrder {
    next: [[Field; 2]; KeyOrder::STATES],
}

impl Default for KeyOrder {
    fn default() -> KeyOrder {
        KeyOrder { next: [[Field::Unknown; 2]; KeyOrder::STATES] }
    }
}

impl KeyOrder {
    /// A state per field, one for unknown keys and one for the start of the object.
    const STATES: usize = FIELD_COUNT + 2;
    const START: usize = FIELD_COUNT + 1;

    /// The field whose key the message has at `at`, written `"name":`, if it is one of the two
    /// expected after state `after`. A key written otherwise (with spaces before its colon, or
    /// escapes) is not recognised here, and is read the long way.
    #[inline(always)]
    fn expected(&mut self, after: usize, message: &[u8], at: usize) -> Option<(Field, usize)> {
        let guesses = self.next.get_mut(after)?;
        let written = |field: Field| {
            let key = field.key_token();
            let written = !key.is_empty() && message.get(at..at + key.len()).is_some_and(|text| same_bytes(text, key));
            written.then_some((field, key.len()))
        };
        if let Some(found) = written(guesses[0]) {
            return Some(found);
        }
        let found = written(guesses[1])?;
        guesses.swap(0, 1);
        Some(found)
    }

    /// Notes that `field` came after state `after`.
    fn learn(&mut self, after: usize, field: Field) {
        if let Some(guesses) = self.next.get_mut(after) {
            *guesses = [field, guesses[0]];
        }
    }

    #[cfg(test)]
    pub(super) fn guesses_after(&self, after: Option<Field>) -> [Field; 2] {
        self.next[after.map_or(KeyOrder::START, |field| field as usize)]
    }
}

/// What [`mark_quotes`] found besides the quotes.
struct Pass {
    /// No DEL and no byte 0xC2 (the lead byte of every C1 control, U+0080–U+009F): no string
    /// in the message has an escape or a control character.
    clean: bool,
    /// Every byte below 0x80.
    ascii: bool,
}

/// Sets bit `i % 64` of `quotes[i / 64]` for each quote at byte `i`. `None` when the message
/// is too long for `quotes` or holds a backslash or a C0 control character.
fn mark_quotes(bytes: &[u8], quotes: &mut [u64; QUOTE_WORDS]) -> Option<Pass> {
    let (blocks, rest) = bytes.as_chunks::<64>();
    let mut seen = Seen { odd: u8x16::ZERO, unclean: u8x16::ZERO, any: u8x16::ZERO };
    let mut words = quotes.iter_mut();
    for block in blocks {
        *words.next()? = quote_bits(block, &mut seen);
    }
    if !rest.is_empty() {
        let mut padded = [b' '; 64];
        padded[..rest.len()].copy_from_slice(rest);
        *words.next()? = quote_bits(&padded, &mut seen);
    }
    (seen.odd.move_mask() == 0).then(|| Pass { clean: seen.unclean.move_mask() == 0, ascii: seen.any.move_mask() == 0 })
}

/// Lanes of bytes seen so far, or-ed together.
struct Seen {
    /// Backslashes and C0 controls.
    odd: u8x16,
    /// DELs and 0xC2 bytes.
    unclean: u8x16,
    /// Every byte (the high bits tell a byte above 0x7F).
    any: u8x16,
}

/// The quote bits of 64 bytes, the rest noted in `seen`.
#[inline(always)]
fn quote_bits(block: &[u8; 64], seen: &mut Seen) -> u64 {
    let (lanes, _) = block.as_chunks::<16>();
    let mut bits = 0;
    for (i, lane) in lanes.iter().enumerate() {
        let v = u8x16::new(*lane);
        bits |= u64::from(v.cmp_eq(u8x16::splat(b'"')).move_mask() as u16) << (16 * i);
        seen.odd |= v.min(u8x16::splat(0x1f)).cmp_eq(v) | v.cmp_eq(u8x16::splat(b'\\'));
        seen.unclean |= v.cmp_eq(u8x16::splat(0x7f)) | v.cmp_eq(u8x16::splat(0xc2));
        seen.any |= v;
    }
    bits
}

/// `message[start..end]` as text, without the index and UTF-8 checks: the scanner has checked
/// both already, and repeating them is a visible share of the counting path.
///
/// # Safety
///
/// `message` must be UTF-8, and `start <= end <= message.len()` must both fall on character
/// boundaries. The scanner meets this by reading a message only once it is known to be UTF-8
/// (all ASCII, or checked in full) and cutting it only at, or just after, a byte it has read
/// or found in its quote bits (which mark `"` bytes of the message only): quotes, digits,
/// signs, `.`, `e`/`E` and the letters of `true`/`false`/`null`, ASCII, hence whole
/// characters. `tests::text_around_non_ascii_characters_is_cut_at_boundaries` puts multi-byte
/// characters next to every cut (the debug assertion checks each one).
#[inline(always)]
unsafe fn token(message: &[u8], start: usize, end: usize) -> &str {
    debug_assert!(std::str::from_utf8(message)
        .is_ok_and(|text| start <= end && text.is_char_boundary(start) && text.is_char_boundary(end)));
    // SAFETY: the caller's promise above.
    unsafe { std::str::from_utf8_unchecked(message.get_unchecked(start..end)) }
}

struct Scanner<'a, 'q> {
    bytes: &'a [u8],
    quotes: &'q [u64],
    at: usize,
}

impl<'a> Scanner<'a, '_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    /// The next byte that is not whitespace, consumed.
    fn next_token(&mut self) -> Option<u8> {
        match self.next()? {
            b' ' | b'\t' | b'\n' | b'\r' => {
                self.skip_space();
                self.next()
            }
            byte => Some(byte),
        }
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// `(start, end)` of a string without escapes, quotes included.
    fn string(&mut self) -> Option<(usize, usize)> {
        let start = self.at;
        self.expect(b'"')?;
        let mut word = self.at / 64;
        let mut bits = self.quotes.get(word)? & (u64::MAX << (self.at % 64));
        while bits == 0 {
            word += 1;
            bits = *self.quotes.get(word)?;
        }
        self.at = word * 64 + bits.trailing_zeros() as usize + 1;
        Some((start, self.at))
    }

    /// A scalar value, after any whitespace.
    fn value(&mut self) -> Option<FieldValue<'a>> {
        self.skip_space();
        let (start, end) = match self.peek()? {
            b'"' => self.string()?,
            b'-' | b'0'..=b'9' => return self.number(),
            b't' => self.literal(b"true")?,
            b'f' => self.literal(b"false")?,
            b'n' => self.literal(b"null")?,
            _ => return None,
        };
        // SAFETY: a string between quote bits, or a literal whose ASCII letters were compared.
        Some(FieldValue::Json(unsafe { token(self.bytes, start, end) }))
    }

    fn literal(&mut self, word: &[u8]) -> Option<(usize, usize)> {
        let start = self.at;
        self.bytes[start..].starts_with(word).then(|| {
            self.at += word.len();
            (start, self.at)
        })
    }

    /// JSON's number grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`. Counts
    /// (the common case) are read here, while their digits are at hand.
    fn number(&mut self) -> Option<FieldValue<'a>> {
        let start = self.at;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        let count = match self.next()? {
            b'0' => 0,
            digit @ b'1'..=b'9' => self.digits(u64::from(digit - b'0')),
            _ => return None,
        };
        let integer_end = self.at;
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.expect_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            self.expect_digits()?;
        }
        // A number runs up to a delimiter; `01` or `1x` is for serde_json to reject.
        if !matches!(self.peek(), Some(b',' | b'}' | b' ' | b'\t' | b'\n' | b'\r') | None) {
            return None;
        }
        // 19 digits cannot overflow a u64.
        Some(match !negative && integer_end == self.at && self.at - start <= 19 {
            true => FieldValue::Count(count),
            // SAFETY: a number's ASCII signs, digits, `.` and exponent, each one read.
            false => FieldValue::Json(unsafe { token(self.bytes, start, self.at) }),
        })
    }

    /// Skips digits; their value, wrapped around beyond 19 of them.
    fn digits(&mut self, mut value: u64) -> u64 {
        while let Some(digit @ b'0'..=b'9') = self.peek() {
            value = value.wrapping_mul(10).wrapping_add(u64::from(digit - b'0'));
            self.at += 1;
        }
        value
    }

    fn expect_digits(&mut self) -> Option<()> {
        let start = self.at;
        self.digits(0);
        (self.at > start).then_some(())
    }
}
