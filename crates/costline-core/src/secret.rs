//! A secret value (a password, a token, an HMAC key): one type for every secret, so that none
//! of them is ever printed, whichever part holds it. Its `Debug` prints `***` and it
//! serializes to nothing.

use std::fmt;

use serde::Serialize;

/// A secret: never printed.
#[derive(Clone, Serialize)]
pub struct Secret(#[serde(skip)] String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_never_printed() {
        let secret = Secret::new("hunter2".into());
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(secret.expose(), "hunter2");
    }
}
