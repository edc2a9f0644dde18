//! The fast path of the decoder: one forward pass over an object whose values are all strings
//! without escapes, numbers, booleans or `null` — what every well-behaved producer sends.
//!
//! It accepts only what serde_json accepts, and hands out the same raw value texts; anything
//! else (nested values, escapes, a repeated key, any syntax error) makes it give up, and the
//! caller walks the message again with serde_json, which decides and words the error. So it
//! never needs to explain a rejection, and giving up too often only costs speed; accepting
//! what serde_json would reject would be a bug.
//! `tests::fast_path_agrees_with_serde_json` checks the two against each other.

use super::{Field, RawFields};

/// Fills `fields` from `text`; `None` means "not sure: ask serde_json".
pub(super) fn scan<'a>(text: &'a str, fields: &mut RawFields<'a>) -> Option<()> {
    // One vectorised pass rules out escapes and control characters (JSON allows them only as
    // whitespace between tokens, which compact producers do not send): strings then end at the
    // next quote, and their content needs no further check here.
    if !plain(text.as_bytes()) {
        return None;
    }
    let mut scanner = Scanner { bytes: text.as_bytes(), at: 0 };
    scanner.skip_space();
    scanner.expect(b'{')?;
    scanner.skip_space();
    if scanner.peek()? == b'}' {
        scanner.at += 1;
    } else {
        loop {
            let key = scanner.string()?;
            scanner.skip_space();
            scanner.expect(b':')?;
            scanner.skip_space();
            let value = scanner.value()?;
            let field = Field::from_key(&text[key.0 + 1..key.1 - 1]);
            if !matches!(field, Field::Unknown) {
                let slot = &mut fields.values[field as usize];
                if slot.is_some() {
                    return None;
                }
                *slot = Some(&text[value.0..value.1]);
            }
            scanner.skip_space();
            match scanner.next()? {
                b',' => scanner.skip_space(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    scanner.skip_space();
    (scanner.at == scanner.bytes.len()).then_some(())
}

/// No backslash and no control character.
fn plain(content: &[u8]) -> bool {
    // A fold without early exit, so that it runs over whole vectors.
    !content.iter().fold(false, |odd, &b| odd | (b < 0x20) | (b == b'\\'))
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Scanner<'_> {
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

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// `(start, end)` of a string without escapes, quotes included.
    fn string(&mut self) -> Option<(usize, usize)> {
        let start = self.at;
        self.expect(b'"')?;
        self.at += memchr::memchr(b'"', &self.bytes[self.at..])? + 1;
        Some((start, self.at))
    }

    /// `(start, end)` of a scalar value.
    fn value(&mut self) -> Option<(usize, usize)> {
        match self.peek()? {
            b'"' => self.string(),
            b'-' | b'0'..=b'9' => self.number(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<(usize, usize)> {
        let start = self.at;
        self.bytes[start..].starts_with(word).then(|| {
            self.at += word.len();
            (start, self.at)
        })
    }

    /// JSON's number grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Option<(usize, usize)> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
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
        match self.peek() {
            Some(b',' | b'}' | b' ' | b'\t' | b'\n' | b'\r') | None => Some((start, self.at)),
            _ => None,
        }
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
    }

    fn expect_digits(&mut self) -> Option<()> {
        let start = self.at;
        self.digits();
        (self.at > start).then_some(())
    }
}
