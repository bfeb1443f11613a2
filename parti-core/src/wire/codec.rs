//! The byte format of wire records: one format-version byte, then the record in postcard.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The format version this build writes and reads (the first byte of every value).
pub const FORMAT_VERSION: u8 = 2;

/// A record stored in one of the protocol's buckets.
///
/// Encoded as [`FORMAT_VERSION`] followed by the record in
/// [postcard](https://docs.rs/postcard). Decoding checks the version, rejects trailing bytes,
/// and never panics, whatever the input.
pub trait WireRecord: Serialize + DeserializeOwned {
    /// What the record is, for error messages (`"heartbeat"`, …).
    const KIND: &'static str;

    /// The record's bytes.
    ///
    /// # Errors
    /// [`WireError::Encode`] if serialization fails (it does not for parti's records, whose
    /// fields are all plain data).
    fn encode(&self) -> Result<Bytes, WireError> {
        let mut out = vec![FORMAT_VERSION];
        postcard::to_io(self, &mut out).map_err(|e| WireError::Encode {
            kind: Self::KIND,
            message: e.to_string(),
        })?;
        Ok(Bytes::from(out))
    }

    /// A record from its bytes.
    ///
    /// # Errors
    /// A [`WireError`] saying why the bytes are not such a record: empty, another format
    /// version (a foreign value, or one written by another parti version), malformed, or
    /// followed by extra bytes.
    fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let Some((&version, body)) = bytes.split_first() else {
            return Err(WireError::Empty { kind: Self::KIND });
        };
        if version != FORMAT_VERSION {
            return Err(WireError::UnsupportedVersion {
                kind: Self::KIND,
                found: version,
            });
        }
        let (record, rest) =
            postcard::take_from_bytes::<Self>(body).map_err(|e| WireError::Malformed {
                kind: Self::KIND,
                message: e.to_string(),
            })?;
        if !rest.is_empty() {
            return Err(WireError::TrailingBytes {
                kind: Self::KIND,
                extra: rest.len(),
            });
        }
        Ok(record)
    }
}

/// Why bytes could not be turned into a record, or a record into bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The value is empty.
    #[error("empty value where a {kind} record was expected")]
    Empty {
        /// The record expected.
        kind: &'static str,
    },
    /// The first byte is not a format version this build reads.
    #[error(
        "a {kind} record with format version {found}, but this build reads version \
         {FORMAT_VERSION}: the value was written by another program or another parti version"
    )]
    UnsupportedVersion {
        /// The record expected.
        kind: &'static str,
        /// The version byte found.
        found: u8,
    },
    /// The bytes after the version are not a valid record.
    #[error("malformed {kind} record: {message}")]
    Malformed {
        /// The record expected.
        kind: &'static str,
        /// What the decoder said.
        message: String,
    },
    /// A valid record followed by bytes that belong to none.
    #[error("{extra} unexpected bytes after a {kind} record")]
    TrailingBytes {
        /// The record expected.
        kind: &'static str,
        /// How many bytes were left over.
        extra: usize,
    },
    /// Serialization failed.
    #[error("cannot encode a {kind} record: {message}")]
    Encode {
        /// The record.
        kind: &'static str,
        /// What the encoder said.
        message: String,
    },
}
